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
    "Qwen/Qwen3-14B": ("Qwen3ForCausalLM", 151936, 5120, 40, 8),
    "Qwen/Qwen3-30B-A3B": ("Qwen3MoeForCausalLM", 151936, 2048, 48, 4),
    "deepseek-ai/DeepSeek-V2-Lite": ("DeepseekV2ForCausalLM", 102400, 2048, 27, 16),
    "mistralai/Mistral-Nemo-Instruct-2407": ("MistralForCausalLM", 131072, 5120, 40, 8),
    "01-ai/Yi-34B": ("LlamaForCausalLM", 64000, 7168, 60, 8),
    # the language model's part (text_config) of a multimodal config
    "RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic": ("Llama4ForConditionalGeneration", 202048, 5120, 48, 8),
}

# Each config ships verbatim from ../shared/data/models/<folder>/ (catalog.py says so).
SHARED_CONFIGS = {
    "Qwen/Qwen3-14B": "qwen3-14b",
    "Qwen/Qwen3-30B-A3B": "qwen3-30b-a3b",
    "deepseek-ai/DeepSeek-V2-Lite": "deepseek-v2-lite",
    "mistralai/Mistral-Nemo-Instruct-2407": "mistral-nemo-instruct-2407",
    "01-ai/Yi-34B": "yi-34b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b-instruct",
    "RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic": "llama-4-scout-17b-16e-instruct-fp8-dynamic",
}

# Per model: tokenizer_config's BOS (token, id) or None, whether the tokenizer prepends it,
# its EOS, and other specials at their real ids (catalog.py says where each comes from).
SPECIALS = {
    "Qwen/Qwen3-14B": (None, False, ("<|im_end|>", 151645), {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<tool_call>": 151657, "<|file_sep|>": 151664,
        "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}),
    "deepseek-ai/DeepSeek-V2-Lite": (("<\uff5cbegin\u2581of\u2581sentence\uff5c>", 100000), True,
                                     ("<\uff5cend\u2581of\u2581sentence\uff5c>", 100001), {}),
    "mistralai/Mistral-Nemo-Instruct-2407": (("<s>", 1), True, ("</s>", 2), {
        "<unk>": 0, "[INST]": 3, "[/INST]": 4, "[TOOL_CALLS]": 9, "<pad>": 11, "[SYSTEM_PROMPT]": 17,
        "[TOOL_CONTENT]": 19, "<SPECIAL_20>": 20, "<SPECIAL_999>": 999}),
    "01-ai/Yi-34B": (("<|startoftext|>", 1), False, ("<|endoftext|>", 2), {"<unk>": 0}),
    "RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic": (("<|begin_of_text|>", 200000), True, ("<|eot|>", 200008), {
        "<|end_of_text|>": 200001, "<|header_start|>": 200005, "<|header_end|>": 200006, "<|eom|>": 200007,
        "<|python_start|>": 200016, "<|finetune_right_pad|>": 200018, "<|image_start|>": 200080,
        "<|image_end|>": 200081, "<|tile_x_separator|>": 200084, "<|image|>": 200090, "<|patch|>": 200092}),
}
SPECIALS["Qwen/Qwen3-30B-A3B"] = SPECIALS["Qwen/Qwen3-14B"]


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
    top = models.model_config(name)
    assert top["architectures"] == [arch]
    c = top.get("text_config", top)
    assert (c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_key_value_heads"]) == (vocab, hidden, layers, kv)
    assert c["hidden_size"] % c["num_attention_heads"] == 0
    if "Llama-3.1" in name:
        assert c["rope_scaling"]["rope_type"] == "llama3" and c["max_position_embeddings"] == 131072
    if "Instruct" in name and "Llama-3.1" in name:
        assert c["eos_token_id"] == [128001, 128008, 128009]
    gen = models.generation_config(name)
    if name in SHARED_CONFIGS and name != "meta-llama/Llama-3.1-70B-Instruct":
        # generation_config.json only where the public one is known (catalog.py)
        assert gen is None or gen["eos_token_id"][0] == c["eos_token_id"]
    else:
        assert gen is not None


@pytest.mark.parametrize("name", list(SHARED_CONFIGS))
def test_configs_are_verbatim_copies(name):
    shared = REPO.parent / "shared" / "data" / "models" / SHARED_CONFIGS[name] / "config.json"
    if not shared.is_file():
        pytest.skip(f"{shared} is not in this checkout")
    assert (entries()[name].config_dir / "config.json").read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_tokenizer_builds_with_its_size_and_specials(name):
    """Fast (the tokenizers library only): every catalog entry's tokenizer has the config's
    vocabulary size, its specials at their ids, and adds BOS exactly when the real one does."""
    from tokenizers import Tokenizer

    e = entries()[name]
    d = models.build_tokenizer(name)
    t = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert t.get_vocab_size(with_added_tokens=True) == EXPECTED[name][1] == e.vocab_size
    specials = e.specials()
    assert all(t.token_to_id(tok) == i for i, tok in specials.items())
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert {int(k): v["content"] for k, v in tc["added_tokens_decoder"].items()} == specials
    assert tc["eos_token"] == e.eos_token and t.token_to_id(e.eos_token) is not None
    assert tc["model_max_length"] == e.text_config()["max_position_embeddings"]
    ids = t.encode("Hello world, this is a test.").ids
    if e.bos_token is None:
        assert ids[0] not in specials
    else:
        assert ids[0] == t.token_to_id(e.bos_token) and ids[1] not in specials
    # The config's own special ids are specials of the tokenizer (never regular text).
    cfg = e.text_config()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        for i in ([cfg[key]] if isinstance(cfg.get(key), int) else cfg.get(key) or []):
            assert i in specials, (key, i)
    if name in SPECIALS:
        bos, adds_bos, eos, named = SPECIALS[name]
        assert (tc["bos_token"], t.token_to_id(tc["bos_token"])) == bos if bos else tc["bos_token"] is None
        assert (ids[0] == (bos or (None, None))[1]) == adds_bos
        assert (tc["eos_token"], t.token_to_id(tc["eos_token"])) == eos
        assert {k: t.token_to_id(k) for k in named} == named


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
        assert r["has_chat_template"] == (entries()[name].chat_template is not None), name
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
    for name in ("Qwen/Qwen3-14B", "Qwen/Qwen3-30B-A3B"):
        q3 = results[name]
        assert q3["eos"] == ["<|im_end|>", 151645] and q3["bos"][0] is None
        # no default system prompt, unlike Qwen2.5
        assert q3["chat"] == "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    nemo = results["mistralai/Mistral-Nemo-Instruct-2407"]
    assert nemo["chat"] == "<s>[INST]Hello there[/INST]" and nemo["bos"] == ["<s>", 1]
    assert nemo["with_special"] == [1]
    yi = results["01-ai/Yi-34B"]
    assert yi["bos"] == ["<|startoftext|>", 1] and yi["eos"] == ["<|endoftext|>", 2] and yi["with_special"] != [1]
    ds = results["deepseek-ai/DeepSeek-V2-Lite"]
    assert ds["bos"][1] == 100000 and ds["eos"][1] == 100001 and ds["with_special"] == [100000]
    l4 = results["RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic"]
    assert l4["bos"] == ["<|begin_of_text|>", 200000] and l4["eos"] == ["<|eot|>", 200008]
    assert l4["chat"] == "<|begin_of_text|><|header_start|>user<|header_end|>\n\nHello there<|eot|><|header_start|>assistant<|header_end|>\n\n"


def test_vllm_resolves_llama31_offline(hub_env):
    (r,) = _run("_vllm_check.py", ["meta-llama/Llama-3.1-8B"], hub_env)
    assert r["architectures"] == ["LlamaForCausalLM"]
    assert r["max_model_len"] == 131072 and r["vocab_size"] == 128256 == r["len_tokenizer"]
    assert r["hidden_size"] == 4096 and r["dtype"] == "torch.bfloat16"
    # vllm bench serve's random dataset: 128-token prompts re-encode to (nearly) 128 tokens.
    target = 128 - r["num_special"]
    assert all(abs(n - target) <= 2 for n in r["prompt_lens"]), r
    assert all(abs(n - target) <= 2 for n in r["reencoded"]), r


# --- the per-model specs (examples/models/, docs/models.md) -----------------------------


def test_every_issue16_model_has_a_valid_spec():
    from revati.spec.load import load_spec

    specs = {}
    for f in sorted((REPO / "examples" / "models").glob("*.yaml")):
        s = load_spec(f).spec
        assert s.model in entries(), f
        specs[s.model] = s
    assert set(SHARED_CONFIGS) <= set(specs)
    # TP chosen so that the bf16/FP8 weights fit the part (80 GB H100: 70B bf16 needs TP >= 2)
    assert specs["meta-llama/Llama-3.1-70B-Instruct"].tensorParallelSize >= 2
    assert specs["01-ai/Yi-34B"].tensorParallelSize >= 2
    assert specs["RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic"].tensorParallelSize >= 2
