"""orchestrator.run installs the spec's engine version before anything starts, so a version that
cannot be installed is its own error, never a process "crash" of the unwinding (it was reported
as SidecarCrashed: `revati validate --engine-version 0.32.0` before 0.32.0 was installed)."""

from __future__ import annotations

import pytest

from revati.engines import environments
from revati.run import orchestrator
from revati.spec.load import spec_from_dict


def test_a_version_that_cannot_be_installed_fails_before_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path / "engines"))  # nothing installed there
    asked = []

    def ensure(adapter, *, out=None):
        asked.append(adapter.version)
        raise environments.EngineInstallError(f"vllm {adapter.version}: not enough disk (test)")

    monkeypatch.setattr(environments, "ensure", ensure)
    spec = spec_from_dict({
        "apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "x"},
        "spec": {"model": "meta-llama/Llama-3.1-8B", "engine": {"version": "0.15.1"},
                 "workload": {"dataset": {"type": "random", "inputLen": 16, "outputLen": 4},
                              "arrival": {"process": "poisson", "requestRate": 1}, "numPrompts": 1}}})
    out = tmp_path / "run"
    with pytest.raises(environments.EngineInstallError, match="not enough disk"):
        orchestrator.run(spec, out)
    assert asked == ["0.15.1"]
    assert not (out / "sidecar").exists() and not (out / "report.json").exists()  # nothing was started


def test_revati_run_says_why_and_exits_1(tmp_path, monkeypatch, capsys):
    import yaml

    from revati.cli import main

    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path / "engines"))

    def ensure(adapter, *, out=None):
        raise environments.EngineInstallError(f"vllm {adapter.version}: not enough disk (test)")

    monkeypatch.setattr(environments, "ensure", ensure)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "x"},
        "spec": {"model": "meta-llama/Llama-3.1-8B", "engine": {"version": "0.15.1"},
                 "workload": {"dataset": {"type": "random", "inputLen": 16, "outputLen": 4},
                              "arrival": {"process": "poisson", "requestRate": 1}, "numPrompts": 1}}}))
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:  # `revati run` installs its own handlers; this process's go back after it
        assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert "vllm 0.15.1: not enough disk (test)" in capsys.readouterr().err
