"""The SGLang adapter: its version, install requirements, commands and the plugin entry point."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from revati import engines
from revati.engines import environments

REPO = Path(__file__).resolve().parent.parent.parent


def test_sglang_is_an_engine_with_its_pinned_version():
    e = engines.get("sglang")
    assert (e.name, e.version) == ("sglang", "0.5.23") and engines.supported()["sglang"] == ("0.5.23",)
    # sglang 0.5.23 pins torch 2.14.1; the index's build of it is CUDA 13 (flashinfer/cutlass-dsl [cu13])
    assert e.requirements() == ["sglang==0.5.23", "torch==2.14.1"]
    assert e.build().cuda == "13.0"
    with pytest.raises(engines.UnknownEngineError, match=r"sglang 0\.4\.0 is not supported; supported: .*sglang 0\.5\.23"):
        engines.get("sglang", "0.4.0")


def test_sglang_gets_an_environment_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path))
    e = engines.get("sglang")
    assert not e.in_this_interpreter() or e.installed_version() == "0.5.23"
    assert environments.env_of(e).path == tmp_path / "sglang-0.5.23"


def test_serve_command_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path))
    e = engines.get("sglang")
    env = environments.env_of(e)
    env.path.mkdir(parents=True)
    env.marker.write_text("{}")
    assert e.serve_command("m", host="127.0.0.1", port=30000, serve_args=["--x", "1"]) == [
        str(env.bin / "python"), "-m", "sglang.launch_server", "--model-path", "m", "--load-format", "dummy",
        "--host", "127.0.0.1", "--port", "30000", "--x", "1"]
    assert e.parallel_args(tensor_parallel_size=2, pipeline_parallel_size=1) == ["--tp-size", "2", "--pp-size", "1"]
    assert e.tokenizer_args("/t") == ["--tokenizer-path", "/t"]
    assert e.emulator_serve_args(tensor_parallel_size=1, given=set()) == ["--sampling-backend", "pytorch"]
    assert e.emulator_serve_args(tensor_parallel_size=2, given={"sampling-backend"}) == ["--disable-custom-all-reduce"]
    env = e.env_defaults(nccl_library="/s/lib.so")
    assert env["SGLANG_NCCL_SO_PATH"] == "/s/lib.so" and env["SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"] == "0"


def test_the_plugin_entry_point_is_sglangs_general_plugin_group_in_pyproject():
    group, target = engines.get("sglang").plugin_entry_point
    assert group == "sglang.srt.plugins"  # sglang/srt/plugins/__init__.py GENERAL_PLUGINS_GROUP
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert target in eps[group].values()


@pytest.mark.parametrize("name,kind", [
    ("sglang::scheduler", "engine"), ("sglang::scheduler_TP1", "engine"), ("sglang::scheduler_DP0_ATTN_CP1_TP3", "engine"),
    ("sglang::detokenizer", "worker"),
    ("python", None), ("schedulers", None),
])
def test_process_names(name, kind):
    assert engines.get("sglang").process_kind(name) == kind
