"""Input generators for fuzzing the sidecar's protocol (tests/sidecar/test_fuzz.py and
benchmarks/fuzz_protocols.py share them).

Three kinds of input, mixed: raw frames of random bytes; well-framed messages with random
msgpack payloads; and PREDICT batches of real descriptors with fields mutated to wrong types,
huge or negative values, or dropped."""

from __future__ import annotations

import math

import msgpack
from hypothesis import strategies as st

from revati.sidecar.protocol import PROTOCOL_VERSION, MsgType

VALID_OPS = [
    {"op": "gemm", "m": 512, "n": 8192, "k": 8192},
    {"op": "gemm", "m": 1, "n": 4096, "k": 11008, "dtype": "fp16", "batch": 2},
    {"op": "attention", "phase": "decode", "num_heads": 32, "num_kv_heads": 8, "head_dim": 128,
     "seq_lens": [700, 128, 2048]},
    {"op": "attention", "num_heads": 32, "head_dim": 128, "query_lens": [512, 1],
     "seq_lens": [512, 900]},
    {"op": "attention", "phase": "prefill", "num_heads": 16, "head_dim": 64, "num_tokens": 256,
     "batch_size": 2, "kv_len_max": 128},
    {"op": "attention", "phase": "prefill", "batch_size": 2, "num_tokens": 64, "kv_len_sum": 900,
     "kv_len_max": 600, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "attn_pairs": 7000},
    {"op": "collective", "kind": "all_reduce", "bytes": 1 << 20, "ranks": 2},
    {"op": "memcpy", "bytes": 1 << 20, "direction": "h2d"},
    {"op": "norm", "tokens": 64, "hidden": 4096},
    {"op": "activation", "bytes": 1 << 16},
    {"op": "rotary", "tokens": 8, "hidden": 4096, "dtype": "bf16"},
    {"op": "elementwise", "bytes": 4096},
    {"op": "embedding", "tokens": 16, "hidden": 4096},
]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=20),
    st.sampled_from(["gemm", "attention", "decode", "prefill", "bf16", "h2d", "all_reduce", ""]),
)
values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.dictionaries(st.one_of(st.text(max_size=12), st.integers(-5, 5)), inner, max_size=6)),
    max_leaves=25)


@st.composite
def mutated_op(draw) -> object:
    op = dict(draw(st.sampled_from(VALID_OPS)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "drop", "huge", "negative", "list"]))
        field = draw(st.sampled_from(sorted(op) + ["op", "phase", "extra"]))
        if action == "drop":
            op.pop(field, None)
        elif action == "huge":
            op[field] = draw(st.sampled_from([2 ** 62, 2 ** 64 - 1, 10 ** 15, 1e300, math.inf]))
        elif action == "negative":
            op[field] = draw(st.integers(-(2 ** 63), -1))
        elif action == "list":
            op[field] = draw(st.lists(st.integers(-3, 2 ** 40), max_size=40))
        else:
            op[field] = draw(values)
    return op


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


_type_byte = st.one_of(st.sampled_from([bytes([int(t)]) for t in MsgType]), st.binary(max_size=3))
raw_frames = st.lists(st.binary(max_size=64), max_size=5)
random_message = st.tuples(_type_byte, values.map(_pack)).map(list)
predict_message = st.builds(
    lambda ops, wrap, ident: [bytes([MsgType.PREDICT]),
                              _pack({"ops": ops, "id": ident} if wrap else ops)],
    st.lists(st.one_of(mutated_op(), values), max_size=8), st.booleans(), values)
hello_message = st.builds(
    lambda v, gpu: [bytes([MsgType.HELLO]), _pack({"version": v, "gpu": gpu})],
    st.one_of(st.just(PROTOCOL_VERSION), values), st.one_of(st.sampled_from(["h100-sxm", None]), values))
truncated = st.builds(lambda msg, cut: [msg[0], msg[1][:cut]], predict_message, st.integers(0, 40))
messages = st.one_of(raw_frames, random_message, predict_message, predict_message, hello_message,
                     truncated)
