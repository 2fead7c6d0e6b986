"""The engine versions' environments: state, lock, failure clean-up, progress, the CLI, the spec.

Nothing here downloads: pip is replaced by a function that writes what a real install would
(or fails like one). tests/e2e/test_engine_versions.py installs a real version.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from revati import engines
from revati.engines import environments
from revati.cli import main as cli_main
from revati.engines.base import VENV_BIN


@pytest.fixture
def engines_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path / "engines"))
    return tmp_path / "engines"


def _fake_venv(path: Path) -> None:
    """A 'venv' whose python is this interpreter (enough for the install's steps)."""
    (path / "bin").mkdir(parents=True, exist_ok=True)
    (path / "bin" / "python").symlink_to(sys.executable)


@pytest.fixture
def fake_pip(monkeypatch):
    """Replaces venv creation, pip and the check with recorders; .fail makes one pip call fail."""
    calls: list[list[str]] = []
    state = {"fail_on": None, "verified": {"torch": "2.9.1+cu128", "cuda": "12.8", "engine": "0.15.1",
                                          "revati": "0.1.0", "plugins": ["revati.vllm_plugin:register"]}}
    real_run = subprocess.run

    def run(cmd, *a, **kw):
        if cmd[1:3] == ["-m", "venv"]:
            _fake_venv(Path(cmd[-1]))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return real_run(cmd, *a, **kw)

    def pip(env, args, progress, log):
        calls.append(list(args))
        (env.path / "lib").mkdir(exist_ok=True)
        (env.path / "lib" / f"step{len(calls)}").write_text("x")
        for line in ("Collecting vllm==0.15.1", "  Downloading vllm-0.15.1-cp38-abi3-manylinux1_x86_64.whl (1.2 GB)",
                     "Installing collected packages: a, b, vllm"):
            progress.pip_line(line)
        if state["fail_on"] == len(calls):
            raise environments.EngineInstallError("pip failed to install x:\n    ERROR: No matching distribution")

    def verify(env, adapter):
        got = dict(state["verified"])
        want = adapter.build()
        if not got["cuda"]:
            raise environments.EngineInstallError(f"torch {got['torch']} is a CPU-only build")
        assert want.torch in got["torch"]
        return got

    monkeypatch.setattr(environments.subprocess, "run", run)
    monkeypatch.setattr(environments, "_run_pip", pip)
    monkeypatch.setattr(environments, "verify", verify)
    state["calls"] = calls
    return state


def test_the_supported_versions_and_their_builds():
    vs = engines.supported()["vllm"]
    assert vs[0] == "0.33.0" and "0.15.1" in vs
    b = engines.get("vllm", "0.15.1").build()
    assert (b.torch, b.cuda.split(".")[0], b.layer) == ("2.9.1", "12", "v1")
    assert engines.get("vllm", "0.15.1").requirements() == ["vllm==0.15.1", "torch==2.9.1"]
    assert engines.get("vllm", "0.32.0").build().cuda.startswith("13.")


def test_an_unsupported_version_is_a_spec_error_that_lists_the_supported_ones():
    from revati.spec import SpecError
    from revati.spec.load import spec_from_dict

    data = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "x"},
            "spec": {"model": "meta-llama/Llama-3.1-8B", "engine": {"version": "0.9.0"}}}
    with pytest.raises(SpecError) as e:
        spec_from_dict(data)
    for v in engines.supported()["vllm"]:
        assert v in str(e.value)
    assert "0.9.0" in str(e.value) and "engine.version" in str(e.value)


def test_install_writes_the_marker_last_and_the_env_is_then_used(engines_dir, fake_pip):
    a = engines.get("vllm", "0.15.1")
    env = environments.env_of(a)
    assert env.path == engines_dir / "vllm-0.15.1" and env.state() == "absent"
    with pytest.raises(environments.EngineNotInstalledError, match=r"revati engines install vllm 0\.15\.1"):
        _ = a.bin_dir
    out = io.StringIO()
    assert environments.install(a, editable=True, out=out) == env
    assert fake_pip["calls"][0] == ["vllm==0.15.1", "torch==2.9.1"]
    assert fake_pip["calls"][1][:2] == ["--no-deps", "-e"] and fake_pip["calls"][1][2] == str(environments.SOURCE_ROOT)
    assert env.state() == "installed" and env.info()["cuda"] == "12.8"
    assert a.bin_dir == env.bin and a.serve_command("m", host="h", port=1, serve_args=[])[0] == str(env.bin / "vllm")
    text = out.getvalue()
    assert "installing 3 packages" in text and "ready: torch 2.9.1+cu128 (CUDA 12.8)" in text
    # installed: no pip at all the second time
    environments.ensure(a, out=out)
    assert len(fake_pip["calls"]) == 2


def test_the_default_version_runs_from_revatis_own_environment(engines_dir):
    a = engines.get()
    assert a.in_this_interpreter() and a.bin_dir == VENV_BIN and a.prepare() == VENV_BIN
    assert not engines_dir.exists()  # nothing installed for it


def test_a_failed_install_leaves_nothing_and_says_why(engines_dir, fake_pip):
    fake_pip["fail_on"] = 1
    a = engines.get("vllm", "0.15.1")
    with pytest.raises(environments.EngineInstallError) as e:
        environments.install(a, out=io.StringIO())
    msg = str(e.value)
    assert "installing vllm 0.15.1 failed" in msg and "No matching distribution" in msg and "pip's log" in msg
    env = environments.env_of(a)
    assert env.state() == "absent" and env.log.is_file()


def test_a_cpu_torch_fails_the_install(engines_dir, fake_pip):
    fake_pip["verified"].update(torch="2.9.1+cpu", cuda=None)
    a = engines.get("vllm", "0.15.1")
    with pytest.raises(environments.EngineInstallError, match="CPU-only build"):
        environments.install(a, out=io.StringIO())
    assert environments.env_of(a).state() == "absent"


def test_an_interrupted_install_is_partial_and_resumed(engines_dir, fake_pip, monkeypatch):
    a = engines.get("vllm", "0.15.1")
    env = environments.env_of(a)
    pip = environments._run_pip

    def interrupted(*args):
        pip(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(environments, "_run_pip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        environments.install(a, out=io.StringIO())
    assert env.state() == "partial" and (env.path / "lib" / "step1").exists()
    with pytest.raises(environments.EngineNotInstalledError):
        _ = a.bin_dir  # a partial environment is never used
    monkeypatch.setattr(environments, "_run_pip", pip)
    out = io.StringIO()
    environments.install(a, out=out)
    assert env.state() == "installed" and "resuming vllm==0.15.1" in out.getvalue()
    assert (env.path / "lib" / "step1").exists()  # what was there stays


def _hold_lock(path: str, ready, release) -> None:
    env = environments.EngineEnv("vllm", "0.15.1", Path(path))
    with environments.install_lock(env, lambda m: None):
        ready.set()
        release.wait(30)


def test_the_lock_makes_a_second_install_wait(engines_dir):
    env = environments.EngineEnv("vllm", "0.15.1", engines_dir / "vllm-0.15.1")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(env.path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        said: list[str] = []
        t0 = time.monotonic()
        ctx_timer = ctx.Process(target=lambda: (time.sleep(0.5), release.set()))
        ctx_timer.start()
        with environments.install_lock(env, said.append):
            waited = time.monotonic() - t0
        ctx_timer.join()
        assert waited >= 0.4 and said and f"pid {holder.pid}" in said[0]
    finally:
        release.set()
        holder.join(10)


def test_remove(engines_dir, fake_pip, capsys):
    a = engines.get("vllm", "0.15.1")
    environments.install(a, out=io.StringIO())
    assert cli_main(["engines", "remove", "vllm", "0.15.1"]) == 0
    assert environments.env_of(a).state() == "absent"
    assert cli_main(["engines", "remove", "vllm", "0.33.0"]) == 2  # beside revati


def test_engines_list_names_every_version_and_its_state(engines_dir, fake_pip, capsys):
    environments.install(engines.get("vllm", "0.15.1"), out=io.StringIO())
    (engines_dir / "vllm-0.9.9").mkdir()
    assert cli_main(["engines", "list"]) == 0
    out, err = capsys.readouterr()
    for v in engines.supported()["vllm"]:
        assert v in out
    assert "installed: torch 2.9.1+cu128 CUDA 12.8" in out and "beside revati" in out
    assert "vllm-0.9.9 is not a supported version" in err
    assert cli_main(["engines", "install", "vllm", "0.9.0"]) == 2


def test_progress_lines_without_a_terminal():
    out = io.StringIO()
    p = environments.Progress("vllm 0.15.1", out)
    p.phase_start("installing")
    for i in range(40):
        p.pip_line(f"Collecting pkg{i}")
    p.pip_line("  Downloading torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl (899.7 MB)")
    p.pip_line("Installing collected packages: a, b")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("vllm 0.15.1: installing")
    assert sum("resolving: " in x for x in lines) == 2  # every 20 packages, not every line
    assert "installing 2 packages (0.90 GB downloaded)" in lines[-1]


def test_an_install_that_the_disk_cannot_hold_fails_before_writing(engines_dir, fake_pip, monkeypatch):
    adapter = engines.get("vllm", "0.15.1")
    usage = environments.shutil.disk_usage(Path("/"))
    monkeypatch.setattr(environments.shutil, "disk_usage", lambda p: usage._replace(free=int(3e9)))
    with pytest.raises(environments.EngineInstallError, match=r"needs about 12\.0 GB free .* 3\.0 GB are free"):
        environments.install(adapter, out=io.StringIO())
    assert fake_pip["calls"] == [] and not environments.env_of(adapter).path.exists()
    # with the room, the same install goes through
    monkeypatch.setattr(environments.shutil, "disk_usage", lambda p: usage._replace(free=int(50e9)))
    assert environments.install(adapter, out=io.StringIO()).installed()
