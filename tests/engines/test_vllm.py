"""The vLLM adapter, and engines.get."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from revati import engines
from revati.engines.base import VENV_BIN

REPO = Path(__file__).resolve().parent.parent.parent


def test_get_returns_the_default_version_and_names_what_is_supported():
    e = engines.get()
    assert e.name == "vllm" and e.version == "0.33.0" and engines.get("vllm", "0.32.0").version == "0.32.0"
    with pytest.raises(engines.UnknownEngineError, match=r"unknown engine 'tgi'; supported: vllm 0\.33\.0.*; sglang 0\.5\.23"):
        engines.get("tgi")
    with pytest.raises(engines.UnknownEngineError, match=r"vllm 0\.9\.0 is not supported; supported: vllm 0\.33\.0"):
        engines.get("vllm", "0.9.0")


def test_the_declared_versions_are_what_the_project_installs():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    e = engines.get()
    assert e.requirement() in deps
    assert e.installed_version() in e.versions


def test_serve_and_bench_commands():
    e = engines.get()
    assert e.serve_command("m", host="0.0.0.0", port=8000, serve_args=["--x", "1"]) == [
        str(VENV_BIN / "vllm"), "serve", "m", "--load-format", "dummy", "--host", "0.0.0.0", "--port", "8000", "--x", "1"]
    assert e.bench_command(["--a"]) == [str(VENV_BIN / "vllm"), "bench", "serve", "--a"]
    # every version's load is driven by revati's own bench (0.15.1's has no timed_trace dataset)
    # (and without it being installed: the bench does not touch the version's environment)
    old = engines.get("vllm", "0.15.1")
    assert not old.in_this_interpreter()
    assert old.bench_command(["--a"]) == [str(VENV_BIN / "vllm"), "bench", "serve", "--a"]
    assert e.bench_backend == "vllm" and e.load_generator == "vllm bench serve"
    assert (e.health_path, e.models_path) == ("/health", "/v1/models")
    assert e.parallel_args(tensor_parallel_size=2, pipeline_parallel_size=3) == [
        "--tensor-parallel-size", "2", "--pipeline-parallel-size", "3"]


def test_emulator_flags_leave_the_users_own():
    e = engines.get()
    assert e.emulator_serve_args(tensor_parallel_size=1, given=set()) == ["--shutdown-timeout", "10"]
    assert e.emulator_serve_args(tensor_parallel_size=2, given={"shutdown-timeout"}) == ["--disable-custom-all-reduce"]
    assert e.emulator_serve_args(tensor_parallel_size=4, given={"disable-custom-all-reduce"}) == [
        "--shutdown-timeout", "10"]


def test_env_switches_point_nccl_at_the_shim():
    env = engines.get().env_defaults(nccl_library="/s/librevati_shim.so")
    assert env["VLLM_NCCL_SO_PATH"] == "/s/librevati_shim.so"
    assert env["VLLM_USE_FLASHINFER_SAMPLER"] == env["VLLM_ALLREDUCE_USE_FLASHINFER"] == "0"


def test_the_plugin_entry_point_is_the_one_pyproject_declares():
    group, target = engines.get().plugin_entry_point
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert target in eps[group].values()


@pytest.mark.parametrize("name,kind", [
    ("APIServer", "api"), ("APIServer_1", "api"), ("VLLM::EngineCore", "engine"), ("EngineCore_DP1", "engine"),
    ("Worker", "worker"), ("Worker_TP1", "worker"), ("Worker_PP1_TP0", "worker"), ("VLLM::Worker_DP0_TP3_EP3", "worker"),
    ("python", None), ("Workers", None), ("EngineCoreX", None),
])
def test_process_names(name, kind):
    assert engines.get().process_kind(name) == kind


def test_log_lines_name_their_process():
    e = engines.get()
    assert e.log_process("(EngineCore pid=4242) INFO 12-02 [core.py:1] ready") == ("EngineCore", 4242)
    assert e.log_process("(Worker_PP1_TP0 pid=7) WARNING x") == ("Worker_PP1_TP0", 7)
    assert e.log_process("INFO plain line") is None
