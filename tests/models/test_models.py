"""revati.models: catalog, stand-in tokenizers, offline hub; checked with the real
transformers and vLLM stacks, offline (in subprocesses, since the HF libraries read their
offline switches at import time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revati import models
from revati.models.catalog import entries

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

EXPECTED = {
    # name: (architecture, vocab_size, hidden, layers, kv heads)
    "meta-llama/Llama-2-7b-hf": ("LlamaForCausalLM", 32000, 4096, 32, 32),
    "meta-llama/Llama-2-70b-hf": ("LlamaForCausalLM", 32000, 8192, 80, 8),
    "meta-llama/Meta-Llama-3-8B": ("LlamaForCausalLM", 128256, 4096, 32, 8),
    "meta-llama/Meta-Llama-3-70B": ("LlamaForCausalLM", 128256, 8192, 80, 8),
    "meta-llama/Llama-3.1-8B": ("LlamaForCausalLM", 128256, 4096, 32, 8),
    "meta-llama/Llama-3.1-70B": ("LlamaForCausalLM", 128256, 8192, 80, 8),
    "meta-llama/Llama-3.1-8B-Instruct": ("LlamaForCausalLM", 128256, 4096, 32, 8),
    "meta-llama/Llama-3.1-70B-Instruct": ("LlamaForCausalLM", 128256, 8192, 80, 8),
    "mistralai/Mixtral-8x7B-v0.1": ("MixtralForCausalLM", 32000, 4096, 32, 8),
    "codellama/CodeLlama-34b-Instruct-hf": ("LlamaForCausalLM", 32000, 8192, 48, 8),
    "Qwen/Qwen2.5-7B-Instruct": ("Qwen2ForCausalLM", 152064, 3584, 28, 4),
}


@pytest.fixture(scope="session")
def hub_env(tmp_path_factory) -> dict[str, str]:
    # Tokenizer builds are cached in revati's on-disk cache (seconds the first time only);
    # the hub itself is laid out fresh in a tmp dir.
    return models.prepare_offline_hub(tmp_path_factory.mktemp("hf_home"))


def _run(script: str, args: list[str], env: dict[str, str], timeout: int = 300) -> list[dict]:
    full = dict(os.environ)
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
    # No network: make any accidental hub access fail fast instead of hanging.
    full.update({"HF_ENDPOINT": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    p = subprocess.run(
        [sys.executable, str(HERE / script), *args], env=full, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert p.returncode == 0, f"{script} failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


# --- catalog ----------------------------------------------------------------------------


def test_catalog_lists_every_model():
    assert models.list_models() == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_configs(name):
    arch, vocab, hidden, layers, kv = EXPECTED[name]
    c = models.model_config(name)
    assert c["architectures"] == [arch]
    assert (c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_key_value_heads"]) == (vocab, hidden, layers, kv)
    assert c["hidden_size"] % c["num_attention_heads"] == 0
    if "Llama-3.1" in name:
        assert c["rope_scaling"]["rope_type"] == "llama3" and c["max_position_embeddings"] == 131072
    if "Instruct" in name and "Llama-3.1" in name:
        assert c["eos_token_id"] == [128001, 128008, 128009]
    assert models.generation_config(name) is not None


def test_resolve_catalog_names():
    r = models.resolve("meta-llama/Llama-3.1-8B")
    assert (r.model, r.tokenizer, r.in_catalog) == ("meta-llama/Llama-3.1-8B", None, True)
    assert models.resolve("llama-3.1-8b").model == "meta-llama/Llama-3.1-8B"  # forgiving form


def test_unknown_model_error_lists_known_models():
    with pytest.raises(models.UnknownModelError) as ei:
        models.resolve("meta-llama/Llama-9-1T")
    msg = str(ei.value)
    assert "Llama-9-1T" in msg
    for name in EXPECTED:
        assert name in msg
    with pytest.raises(KeyError):  # also a KeyError, like revati.catalog.get_gpu
        models.model_config("nope/nope")


def test_local_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.resolve(tmp_path)


def test_local_dir_gets_a_tokenizer(tmp_path):
    cfg = dict(models.model_config("meta-llama/Llama-3.1-8B"))
    cfg["vocab_size"] = 128256
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = models.resolve(tmp_path)
    assert r.model == str(tmp_path.resolve()) and not r.in_catalog
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(r.tokenizer) / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == 128256
    assert tok.token_to_id("<|begin_of_text|>") == 128000 and tok.token_to_id("<|end_of_text|>") == 128001
    assert not any((tmp_path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))  # untouched
    # A dir that ships its own tokenizer is returned as is.
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert models.resolve(tmp_path).tokenizer is None


# --- tokenizers (the tokenizers library directly) --------------------------------------


def test_special_token_ids():
    from tokenizers import Tokenizer

    def load(name):
        return Tokenizer.from_file(str(models.build_tokenizer(name) / "tokenizer.json"))

    t = load("meta-llama/Llama-3.1-8B-Instruct")
    want = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|finetune_right_pad_id|>": 128004,
            "<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eom_id|>": 128008,
            "<|eot_id|>": 128009, "<|python_tag|>": 128010, "<|reserved_special_token_0|>": 128002,
            "<|reserved_special_token_247|>": 128255}
    assert {k: t.token_to_id(k) for k in want} == want
    t = load("meta-llama/Meta-Llama-3-8B")
    assert t.token_to_id("<|eot_id|>") == 128009 and t.token_to_id("<|reserved_special_token_250|>") == 128255
    for name in ("meta-llama/Llama-2-7b-hf", "mistralai/Mixtral-8x7B-v0.1", "codellama/CodeLlama-34b-Instruct-hf"):
        t = load(name)
        assert [t.token_to_id(s) for s in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
        assert t.encode("hi").ids[0] == 1  # BOS added like the real Llama tokenizer
    t = load("Qwen/Qwen2.5-7B-Instruct")
    assert [t.token_to_id(s) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>")] == [151643, 151644, 151645, 151664]
    assert t.get_vocab_size(with_added_tokens=True) == 152064
    assert t.encode("hi").ids[0] != 151643  # Qwen adds no BOS


def test_builder_is_deterministic_and_truncatable():
    from revati.models.tokenizer import _bpe, build_base_bpe

    a = build_base_bpe(40000)
    b = build_base_bpe(40000)
    assert a == b
    tokens, merges = a
    assert len(tokens) == 40000 and len(merges) == 40000 - 256 and len(set(tokens)) == 40000
    ranks = {m: i for i, m in enumerate(merges)}
    # Every token is reachable by its own merges.
    for t in tokens[256::997]:
        assert _bpe(t, ranks) == [t]


# --- offline hub + transformers -------------------------------------------------------


def test_hub_layout_and_idempotence(hub_env, tmp_path):
    hf_home = Path(hub_env["HF_HOME"])
    assert hub_env["HF_HUB_OFFLINE"] == "1" and hub_env["TRANSFORMERS_OFFLINE"] == "1"
    repo = hf_home / "hub" / "models--meta-llama--Llama-3.1-8B"
    rev = (repo / "refs" / "main").read_text().strip()
    assert len(rev) == 40
    snap = repo / "snapshots" / rev
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (snap / f).is_file(), f
    before = {p: p.stat().st_mtime_ns for p in snap.iterdir()}
    assert models.prepare_offline_hub(hf_home) == hub_env
    assert {p: p.stat().st_mtime_ns for p in snap.iterdir()} == before


def test_transformers_offline_all_models(hub_env):
    results = {r["name"]: r for r in _run("_hf_check.py", list(EXPECTED), hub_env)}
    assert set(results) == set(EXPECTED)
    for name, r in results.items():
        arch, vocab, *_ = EXPECTED[name]
        assert r["architectures"] == [arch], name
        assert r["config_vocab_size"] == vocab == r["len_tokenizer"], name
        assert 3.0 <= r["chars_per_token"] <= 6.0, (name, r["chars_per_token"])
        assert r["roundtrip"] and r["reencoded"], name
        assert r["has_chat_template"] == ("Instruct" in name), name
    l31 = results["meta-llama/Llama-3.1-8B-Instruct"]
    assert l31["bos"] == ["<|begin_of_text|>", 128000] and l31["eos"] == ["<|eot_id|>", 128009]
    assert l31["chat"].startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert l31["chat"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert results["meta-llama/Llama-3.1-8B"]["eos"] == ["<|end_of_text|>", 128001]
    assert results["meta-llama/Llama-2-7b-hf"]["with_special"] == [1]
    q = results["Qwen/Qwen2.5-7B-Instruct"]
    assert q["eos"] == ["<|im_end|>", 151645] and q["vocab"]["<|im_start|>"] == 151644
    assert q["chat"].endswith("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n")
    assert "[INST] Hello there [/INST]" in results["codellama/CodeLlama-34b-Instruct-hf"]["chat"]


def test_vllm_resolves_llama31_offline(hub_env):
    (r,) = _run("_vllm_check.py", ["meta-llama/Llama-3.1-8B"], hub_env)
    assert r["architectures"] == ["LlamaForCausalLM"]
    assert r["max_model_len"] == 131072 and r["vocab_size"] == 128256 == r["len_tokenizer"]
    assert r["hidden_size"] == 4096 and r["dtype"] == "torch.bfloat16"
    # vllm bench serve's random dataset: 128-token prompts re-encode to (nearly) 128 tokens.
    target = 128 - r["num_special"]
    assert all(abs(n - target) <= 2 for n in r["prompt_lens"]), r
    assert all(abs(n - target) <= 2 for n in r["reencoded"]), r
