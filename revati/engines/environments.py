"""One Python environment per engine version, installed on first use.

    env = environments.ensure(engines.get("vllm", "0.15.1"))   # installs it if needed
    env.bin / "vllm"

Each version lives in its own virtual environment under REVATI_ENGINES_DIR (default
~/.cache/revati/engines), named `<engine>-<version>`, with the CUDA build of the torch that the
version pins and the revati package (so that the engine's processes load its plugin, the
semantic layer). The emulator itself (the orchestrator, the sidecar's predictor, the router)
keeps running in revati's own environment: only the engine's processes and its load generator
come from the version's environment, so the predictor is the same whatever version is emulated.

An environment is *installed* once its marker file (`revati-engine.json`, written last, with
what was verified) exists. Before that it is *partial*: never used, resumed by the next install
(pip skips what is there). A failed install (pip fails, or torch is not a CUDA build) removes the
environment and keeps pip's log beside it; pip's download cache keeps what was downloaded, so a
retry does not download again. One install at a time per version (a file lock): a second
`revati run` of the same version waits for the first one's install.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from revati import envs

if TYPE_CHECKING:
    from revati.engines.base import EngineAdapter

MARKER = "revati-engine.json"
#: The checkout (or unpacked source) of the revati package that goes into each environment:
#: REVATI_ENGINE_SOURCE (an image's source folder), else this checkout.
SOURCE_ROOT = Path(envs.get("REVATI_ENGINE_SOURCE") or Path(__file__).resolve().parent.parent.parent)


class EngineInstallError(RuntimeError):
    """A supported version that could not be installed; the message says why."""


class EngineNotInstalledError(RuntimeError):
    """A version whose environment is not installed (and may not be installed here)."""


def engines_dir() -> Path:
    d = envs.get("REVATI_ENGINES_DIR")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "revati" / "engines"


@dataclass(frozen=True)
class EngineEnv:
    """The environment of one engine version (installed or not)."""

    engine: str
    version: str
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def log(self) -> Path:
        """pip's log of the last install (beside the environment, so it survives a removal)."""
        return self.path.parent / f"{self.path.name}.install.log"

    def installed(self) -> bool:
        return self.marker.is_file()

    def state(self) -> str:
        """"installed", "partial" (an install that did not finish: resumable) or "absent"."""
        if self.installed():
            return "installed"
        return "partial" if self.path.exists() else "absent"

    def info(self) -> dict:
        """What the install verified (torch, CUDA, sizes); {} when not installed."""
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}


def env_of(adapter: "EngineAdapter") -> EngineEnv:
    return EngineEnv(adapter.name, adapter.version, engines_dir() / f"{adapter.name}-{adapter.version}")


def listing() -> list[EngineEnv]:
    """Every environment folder under engines_dir (installed or partial)."""
    d = engines_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        m = re.fullmatch(r"(?P<engine>[a-z]+)-(?P<version>\d[\w.+-]*)", p.name)
        if m and p.is_dir():
            out.append(EngineEnv(m["engine"], m["version"], p))
    return out


# ---------------------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------------------


def pip_env() -> dict[str, str]:
    """pip's environment: the package index only.

    NOTE: these machines set PIP_FIND_LINKS (a folder with a CPU-only torch wheel) and a pip.conf;
    plain pip would then satisfy the engine's torch pin with the CPU build, which has no CUDA to
    intercept (shared/notes/cuda-interception-facts.md). scripts/setup.sh does the same.
    """
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


@contextmanager
def install_lock(env: EngineEnv, say: Callable[[str], None]) -> Iterator[None]:
    """One install of a version at a time, across processes (a file lock beside the folder)."""
    env.path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = env.path.parent / f".{env.path.name}.lock"
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            say(f"waiting for the install of {env.engine} {env.version} by {holder} ({lock_path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


class Progress:
    """The install's progress, from pip's output: one status line on a terminal, else a few
    lines (a phase change, every 20 packages)."""

    _COLLECT = re.compile(r"^Collecting (\S+)")
    _DOWNLOAD = re.compile(r"^\s*Downloading (\S+) \((?P<size>[\d.]+) (?P<unit>[kMG]?B)\)")
    _UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}

    def __init__(self, title: str, out=None):
        self.title = title
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.collected = 0
        self.downloaded = 0
        self.bytes = 0.0
        self.phase = ""
        self.t0 = time.monotonic()
        self._last_line = 0

    def _show(self, text: str, force: bool = False) -> None:
        elapsed = time.monotonic() - self.t0
        line = f"{self.title}: {text} [{elapsed:.0f} s]"
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.out.write("\r" + line[:width].ljust(width))
            self.out.flush()
        elif force:
            print(line, file=self.out, flush=True)

    def phase_start(self, phase: str) -> None:
        self.phase = phase
        if self.tty:
            self.out.write("\n" if self._last_line else "")
        self._last_line = 1
        self._show(phase, force=True)

    def pip_line(self, line: str) -> None:
        m = self._COLLECT.match(line)
        if m:
            self.collected += 1
            self._show(f"resolving: {self.collected} packages, {self.bytes / 1e9:.2f} GB downloaded "
                       f"({m.group(1)})", force=self.collected % 20 == 0)
            return
        m = self._DOWNLOAD.match(line)
        if m:
            self.downloaded += 1
            self.bytes += float(m["size"]) * self._UNITS.get(m["unit"], 1)
            self._show(f"downloading {m.group(1)[:60]} ({self.downloaded} files, {self.bytes / 1e9:.2f} GB)")
            return
        if line.startswith("Installing collected packages"):
            n = line.count(",") + 1
            self._show(f"installing {n} packages ({self.bytes / 1e9:.2f} GB downloaded)", force=True)
        elif line.startswith("Successfully installed"):
            self._show("installed", force=True)

    def done(self, text: str) -> None:
        self._show(text, force=not self.tty)
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _run_pip(env: EngineEnv, args: list[str], progress: Progress, log) -> None:
    cmd = [str(env.python), "-m", "pip", "install", "--progress-bar", "off", *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            progress.pip_line(line.rstrip("\n"))
            tail = (tail + [line.rstrip()])[-15:]
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.wait() != 0:
        errors = [t for t in tail if "ERROR" in t or "error" in t.lower()] or tail
        raise EngineInstallError(f"pip failed to install {' '.join(args)}:\n    " + "\n    ".join(errors[-8:]))


VERIFY = """
import json, sys
import torch
from importlib import metadata
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "engine": metadata.version(sys.argv[1]), "revati": metadata.version("revati"),
                  "plugins": sorted(e.value for e in metadata.entry_points(group=sys.argv[2]))}))
"""


def verify(env: EngineEnv, adapter: "EngineAdapter") -> dict:
    """What the environment holds, checked against what the version needs.

    Raises:
        EngineInstallError: torch is a CPU build, or another CUDA major, or the engine's or
            revati's distribution is missing.
    """
    p = subprocess.run([str(env.python), "-c", VERIFY, adapter.distribution, adapter.plugin_entry_point[0]],
                       capture_output=True, text=True, env=pip_env(), timeout=600)
    if p.returncode != 0:
        raise EngineInstallError(f"the environment does not import torch/{adapter.distribution}:\n    "
                                 + "\n    ".join(p.stderr.strip().splitlines()[-6:]))
    got = json.loads(p.stdout.strip().splitlines()[-1])
    want = adapter.build()
    if not got["cuda"]:
        raise EngineInstallError(f"torch {got['torch']} is a CPU-only build: nothing to intercept. pip must take "
                                 f"torch=={want.torch} from the package index (PIP_FIND_LINKS offers a CPU wheel)")
    if got["cuda"].split(".")[0] != want.cuda.split(".")[0]:
        raise EngineInstallError(f"torch {got['torch']} is built for CUDA {got['cuda']}; {adapter.name} "
                                 f"{adapter.version} needs a CUDA {want.cuda} build")
    if got["engine"] != adapter.version:
        raise EngineInstallError(f"{adapter.distribution} {got['engine']} was installed instead of {adapter.version}")
    if adapter.plugin_entry_point[1] not in got["plugins"]:
        raise EngineInstallError(f"the revati plugin ({adapter.plugin_entry_point[1]}) is not registered "
                                 f"in the environment: {got['plugins']}")
    return got


def install(adapter: "EngineAdapter", *, editable: bool | None = None, out=None) -> EngineEnv:
    """Installs (or resumes installing) the environment of adapter's version.

    Args:
        editable: install revati from this checkout in editable mode (default: when the source
            is a checkout, i.e. has a pyproject.toml and a .git), so the environment follows it.
        out: where the progress goes (default stderr).

    Raises:
        EngineInstallError: the install failed; the environment is removed, the message says why
            and names pip's log.
    """
    env = env_of(adapter)
    say = (lambda m: print(f"revati: {m}", file=out or sys.stderr, flush=True))
    with install_lock(env, say):
        if env.installed():
            return env
        resumed = env.path.exists()
        check_disk(env, adapter)
        progress = Progress(f"{adapter.name} {adapter.version}", out)
        editable = (SOURCE_ROOT / ".git").exists() if editable is None else editable
        t0 = time.monotonic()
        try:
            with open(env.log, "a") as log:
                log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} install of {adapter.name} {adapter.version}"
                          f"{' (resumed)' if resumed else ''} into {env.path}\n")
                if not env.python.exists():
                    progress.phase_start(f"creating the environment {env.path}")
                    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env.path)], check=True,
                                   capture_output=True, env=pip_env())
                progress.phase_start(f"{'resuming' if resumed else 'installing'} {adapter.requirement()} "
                                     f"with torch=={adapter.build().torch} (CUDA {adapter.build().cuda}); "
                                     f"about 8 GB, several minutes")
                _run_pip(env, [*adapter.requirements()], progress, log)
                progress.phase_start("installing revati into it (its plugin: the semantic layer)")
                _run_pip(env, ["--no-deps", *(["-e"] if editable else []), str(SOURCE_ROOT)], progress, log)
                progress.phase_start("checking torch's CUDA build and the plugin")
                got = verify(env, adapter)
        except KeyboardInterrupt:
            progress.done("interrupted; the next install resumes it")
            raise
        except (EngineInstallError, subprocess.CalledProcessError, OSError) as e:
            shutil.rmtree(env.path, ignore_errors=True)
            progress.done("failed; the environment was removed")
            why = e if isinstance(e, EngineInstallError) else f"{type(e).__name__}: {e}"
            raise EngineInstallError(f"installing {adapter.name} {adapter.version} failed: {why}\n"
                                     f"  (pip's log: {env.log}; nothing was left in {env.path})") from None
        got.update(engine_name=adapter.name, installed_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   install_s=round(time.monotonic() - t0, 1), editable=editable, source=str(SOURCE_ROOT))
        tmp = env.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(got, indent=1) + "\n")
        os.replace(tmp, env.marker)  # installed from here on, never before
        progress.done(f"ready: torch {got['torch']} (CUDA {got['cuda']}) in {env.path}")
        return env


def check_disk(env: EngineEnv, adapter: "EngineAdapter") -> None:
    """Fails before anything is written when the engines folder's disk cannot hold the install.

    A resumed install needs only what is not there yet.

    Raises:
        EngineInstallError: names the free and the needed space and the folder.
    """
    root = env.path.parent
    root.mkdir(parents=True, exist_ok=True)
    need = adapter.build().disk_gb * 1e9 - (folder_size(env.path) if env.path.exists() else 0)
    free = shutil.disk_usage(root).free
    if free < need:
        raise EngineInstallError(f"installing {adapter.name} {adapter.version} needs about {need / 1e9:.1f} GB free "
                                 f"under {root}; {free / 1e9:.1f} GB are free (REVATI_ENGINES_DIR moves the "
                                 f"environments; `revati engines remove` deletes one). Nothing was installed.")


def ensure(adapter: "EngineAdapter", *, out=None) -> EngineEnv:
    """The installed environment of adapter's version, installing it first if needed."""
    env = env_of(adapter)
    return env if env.installed() else install(adapter, out=out)


def remove(adapter: "EngineAdapter") -> bool:
    """Removes the version's environment (installed or partial); False if there was none."""
    env = env_of(adapter)
    if not env.path.exists():
        return False
    with install_lock(env, lambda m: print(f"revati: {m}", file=sys.stderr)):
        # the marker goes first: a half-removed environment is partial, never "installed"
        env.marker.unlink(missing_ok=True)
        shutil.rmtree(env.path)
    env.log.unlink(missing_ok=True)
    return True


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
