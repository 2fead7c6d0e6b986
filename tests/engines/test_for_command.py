"""`revati exec` without --engine: the engine comes from the command it runs."""

import pytest

from revati import engines


@pytest.fixture
def engines_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_ENGINES_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("command, name", [
    (["python", "-m", "sglang.launch_server", "--model-path", "m"], "sglang"),
    (["python3", "-u", "-m", "sglang.launch_server"], "sglang"),
    (["sglang", "serve", "m"], "sglang"),
    (["vllm", "serve", "m"], "vllm"),
    (["python", "-m", "vllm.entrypoints.openai.api_server"], "vllm"),
    (["python", "app.py"], "vllm"),  # anything else: the default engine's switches, as before
    ([], "vllm"),
])
def test_the_engine_is_named_by_the_program_or_module(engines_dir, command, name):
    e = engines.for_command(command)
    assert e.name == name and e.version == engines.get(name).version


def test_a_program_in_an_engine_versions_environment_runs_that_version(engines_dir):
    for name, version in (("vllm", "0.15.1"), ("sglang", "0.5.23")):
        exe = engines_dir / f"{name}-{version}" / "bin" / "python"
        exe.parent.mkdir(parents=True)
        exe.write_text("")
        e = engines.for_command([str(exe), "-m", "anything"])
        assert (e.name, e.version) == (name, version)
    # a folder there that names no supported version is not an engine's environment
    odd = engines_dir / "vllm-0.9.9" / "bin" / "vllm"
    odd.parent.mkdir(parents=True)
    odd.write_text("")
    assert engines.for_command([str(odd), "serve"]).version == engines.get("vllm").version
