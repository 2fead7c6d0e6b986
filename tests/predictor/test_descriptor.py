"""The batched descriptor validation gives exactly normalize()'s keys and errors."""

import random

import pytest

from revati.predictor.descriptor import DescriptorError, normalize, normalize_batch


def _random_op(rng: random.Random) -> dict:
    c = rng.randrange(14)
    if c == 0:
        op = {"op": "gemm", "m": rng.randrange(0, 5000), "n": 4096, "k": rng.choice([1, 4096])}
        if rng.random() < 0.5:
            op["dtype"] = rng.choice(["bf16", "fp16", "float16", "BF16", "fp8", "e4m3"])
        if rng.random() < 0.2:
            op["batch"] = 2
        return op
    if c == 1:
        op = {"op": "collective", "kind": rng.choice(["all_reduce", "all_gather"]),
              "bytes": rng.randrange(1, 1 << 30), "ranks": rng.choice([1, 2, 8, 16])}
        if rng.random() < 0.3:
            op["ranks_per_node"] = 4
        if rng.random() < 0.3:
            op["topology"] = "pcie"
        return op
    if c == 2:
        return {"op": "memcpy", "bytes": rng.randrange(0, 1 << 20),
                "direction": rng.choice(["h2d", "d2d"])}
    if c in (3, 4):
        op = {"op": rng.choice(["norm", "activation", "rotary", "elementwise", "embedding"]),
              "tokens": rng.randrange(1, 9000), "hidden": rng.choice([4096, 5120])}
        if rng.random() < 0.3:
            op["dtype"] = rng.choice(["fp32", "fp8", "half"])
        return op
    if c == 5:
        op = {"op": "norm", "bytes": rng.randrange(1, 1 << 24)}
        if rng.random() < 0.5:
            op["tokens"] = 7
        return op
    if c in (6, 7, 8):
        op = {"op": "attention", "phase": rng.choice(["decode", "prefill"]),
              "batch_size": rng.randrange(1, 300), "num_heads": 32, "head_dim": 128}
        if rng.random() < 0.5:
            op["num_kv_heads"] = 8
        if rng.random() < 0.5:
            op["kv_len_sum"] = op["batch_size"] * rng.randrange(1, 9000)
        else:
            op["kv_len_max"] = rng.randrange(1, 9000)
        if op["phase"] == "prefill" or rng.random() < 0.3:
            op["num_tokens"] = op["batch_size"] * rng.randrange(1, 30)
        if rng.random() < 0.1:
            op["attn_pairs"] = 1000
        return op
    if c == 9:
        return {"op": "attention", "query_lens": [5, 1], "seq_lens": [100, 200],
                "num_heads": 8, "head_dim": 64}
    if c == 10:
        return {"op": "attention", "phase": "decode", "seq_lens": [rng.randrange(1, 999)] * 3,
                "num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
    if c == 11:  # accepted by normalize, not by the fast path: a whole float
        return {"op": "gemm", "m": 3.0, "n": 2, "k": 2}
    if c == 12:  # bad ops
        return rng.choice([{"op": "gemm", "m": -1, "n": 1, "k": 1}, {"op": "warp"}, [1],
                           {"op": "norm", "tokens": 3}, {"op": "attention", "num_heads": 8,
                                                          "head_dim": 8, "phase": "decode"},
                           {"op": "collective", "kind": "all_to_all", "bytes": 1, "ranks": 2},
                           {"op": "gemm", "m": True, "n": 1, "k": 1}, {"op": ["gemm"]}])
    return {"op": "norm", "tokens": 5, "hidden": 6, "dtype": "half"}


def _slow(ops):
    out = []
    for i, op in enumerate(ops):
        try:
            out.append(normalize(op))
        except DescriptorError as e:
            raise DescriptorError(f"ops[{i}]: {e}") from None
    return out


@pytest.mark.parametrize("seed", range(6))
def test_batch_equals_op_by_op(seed):
    rng = random.Random(seed)
    errors = 0
    for _ in range(150):
        ops = [_random_op(rng) for _ in range(rng.randrange(1, 80))]
        try:
            want, want_err = _slow(ops), None
        except DescriptorError as e:
            want, want_err = None, str(e)
        try:
            got, got_err = normalize_batch(ops), None
        except DescriptorError as e:
            got, got_err = None, str(e)
        assert got_err == want_err
        errors += want_err is not None
        if want is not None:
            assert got == want
            for a, b in zip(got, want):  # the same types too: ints stay ints
                for (_, ka), (_, kb) in zip(a, b):
                    assert list(map(type, ka)) == list(map(type, kb))
    assert errors > 10  # the bad ops were exercised
