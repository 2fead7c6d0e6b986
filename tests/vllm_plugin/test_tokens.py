"""The token-drawing policy: never EOS/special/stop ids, deterministic, inside the vocab."""

from __future__ import annotations

import numpy as np
import pytest

from revati.vllm_plugin import semantics
from revati.vllm_plugin.tokens import build_policy, mix, request_key, seed_from_env

LLAMA3_VOCAB = 128256
LLAMA3_EOS = [128001, 128008, 128009]
LLAMA3_BOS = 128000


def _draw_many(policy, seed=0, n_req=64, n_pos=200):
    keys = np.repeat(
        np.array([request_key(f"cmpl-{i}") for i in range(n_req)], dtype=np.uint64), n_pos
    )
    pos = np.tile(np.arange(n_pos, dtype=np.int64), n_req)
    return policy.draw(seed, keys, pos)


def test_llama3_without_tokenizer_never_emits_special_block():
    pol = build_policy(LLAMA3_VOCAB, eos_ids=LLAMA3_EOS, special_ids=[LLAMA3_BOS])
    out = _draw_many(pol)
    assert out.min() >= 0 and out.max() < LLAMA3_VOCAB
    # Llama 3 reserves 128000..128255 for special tokens: the heuristic must stay below.
    assert out.max() < 128000
    assert not np.isin(out, LLAMA3_EOS + [LLAMA3_BOS]).any()
    assert len(np.unique(out)) > 1000  # actually spread over the vocabulary


def test_llama2_specials_at_bottom():
    pol = build_policy(32000, eos_ids=[2], special_ids=[1, 0])
    out = _draw_many(pol)
    assert out.min() > 2 and out.max() < 32000


def test_deterministic_and_seed_sensitive():
    pol = build_policy(LLAMA3_VOCAB, eos_ids=LLAMA3_EOS)
    a = _draw_many(pol, seed=0)
    b = _draw_many(pol, seed=0)
    c = _draw_many(pol, seed=1)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.9


def test_position_and_request_change_the_token():
    pol = build_policy(50000, eos_ids=[49999])
    k = np.array([request_key("r1")] * 100, dtype=np.uint64)
    pos = np.arange(100)
    t = pol.draw(7, k, pos)
    assert len(np.unique(t)) > 90  # not a constant stream
    t2 = pol.draw(7, np.array([request_key("r2")] * 100, dtype=np.uint64), pos)
    assert (t != t2).mean() > 0.9


def test_request_key_is_stable_across_processes():
    # Python's hash() is salted per process; ours must not be.
    assert request_key("cmpl-abc-0") == request_key("cmpl-abc-0")
    from .conftest import run_python

    code = "from revati.vllm_plugin.tokens import request_key; print(request_key('cmpl-abc-0'))"
    proc = run_python(code, {"PYTHONHASHSEED": "123"})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == request_key("cmpl-abc-0")


def test_per_request_stop_ids_are_respected():
    pol = build_policy(1000, eos_ids=[999])
    n = 5000
    keys = np.full(n, request_key("x"), dtype=np.uint64)
    pos = np.arange(n)
    free = pol.draw(3, keys, pos)
    ban = frozenset(int(t) for t in np.unique(free)[:500])  # half the ids it likes
    out = pol.draw(3, keys, pos, [ban] * n)
    assert not np.isin(out, list(ban)).any()
    assert not (out == 999).any()


def test_ids_past_tokenizer_length_are_excluded():
    # Qwen2.5: config vocab 152064, tokenizer 151665: padded rows cannot be detokenised.
    class Tok:
        all_special_ids = [151643, 151644, 151645]
        eos_token_id = 151645
        added_tokens_decoder = {i: None for i in range(151643, 151665)}

        def __len__(self):
            return 151665

    pol = build_policy(152064, tokenizer=Tok(), eos_ids=[151643, 151645])
    out = _draw_many(pol)
    assert out.max() < 151643
    assert pol.source == "tokenizer-nonspecial"


def test_real_hf_tokenizer_plain_word_filter():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import models, pre_tokenizers

    words = [f"w{chr(97 + i % 26)}{chr(97 + (i // 26) % 26)}" for i in range(600)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, ",": 3, "\n": 4, "!": 5}
    for w in words:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault("\u2581" + w, len(vocab))
    tk = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    hf.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    eot = hf.convert_tokens_to_ids("<|eot|>")
    pol = build_policy(len(hf) + 64, tokenizer=hf, eos_ids=[2])
    assert pol.source == "tokenizer-plain-words"
    out = _draw_many(pol)
    assert out.max() < len(hf)
    assert not np.isin(out, [0, 1, 2, 3, 4, 5, eot]).any()
    for t in np.unique(out)[:50]:
        piece = hf.convert_ids_to_tokens(int(t))
        assert piece.lstrip("\u2581").isalpha(), piece


def test_mix_is_pure_uint64():
    x = mix(2**64 - 1, np.array([2**63 + 5], dtype=np.uint64), np.array([2**40]))
    assert x.dtype == np.uint64


def test_seed_from_env(monkeypatch):
    monkeypatch.delenv("REVATI_SEED", raising=False)
    assert seed_from_env() == 0
    monkeypatch.setenv("REVATI_SEED", "42")
    assert seed_from_env() == 42
    monkeypatch.setenv("REVATI_SEED", "not-a-number")
    assert seed_from_env() == seed_from_env()


# --- num_sampled / num_rejected: the host mirror of get_num_sampled_and_rejected ----------


def test_num_sampled_plain_decode_and_chunked_prefill():
    # req0: decode (computed 100, 1 scheduled, prefill 10)
    # req1: partial prefill chunk (computed 0, 512 of 2000) -> 0 sampled
    # req2: last prefill chunk (computed 1536, 464 of 2000) -> 1 sampled
    # req3: prefix-cache hit then full remainder (computed 96, 4 of 100) -> 1
    num_computed = np.array([100, 0, 1536, 96])
    num_sched = np.array([1, 512, 464, 4])
    prefill = np.array([10, 2000, 2000, 100])
    s, r = semantics.compute_num_sampled(num_computed, num_sched, prefill, np.ones(4, int))
    assert s.tolist() == [1, 0, 1, 1]
    assert r.tolist() == [0, 0, 0, 0]


def test_num_sampled_spec_decode():
    num_computed = np.array([50, 50, 0])
    num_sched = np.array([4, 4, 30])  # 3 drafts + 1 for the first two, a prefill chunk
    prefill = np.array([20, 20, 100])
    num_logits = np.array([4, 4, 1])
    accepted = np.array([3, 1, 0])
    s, r = semantics.compute_num_sampled(num_computed, num_sched, prefill, num_logits, accepted)
    assert s.tolist() == [4, 2, 0]
    assert r.tolist() == [0, 2, 0]


def test_accept_rate_is_honoured():
    n = 20000
    keys = np.arange(n, dtype=np.uint64)
    acc = semantics.draw_accepted(0, keys, np.zeros(n, dtype=np.int64), np.full(n, 1), 0.7)
    assert abs(acc.mean() - 0.7) < 0.02
    acc0 = semantics.draw_accepted(0, keys, np.zeros(n, dtype=np.int64), np.full(n, 4), 0.0)
    assert acc0.max() == 0
    acc1 = semantics.draw_accepted(0, keys, np.zeros(n, dtype=np.int64), np.full(n, 4), 1.0)
    assert acc1.min() == 4
