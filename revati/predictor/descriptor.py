"""The op descriptor: what the shim sends to be predicted (documented in docs/predictor.md).

A descriptor is a map with "op" plus fields. `normalize` validates one and returns its parts,
each a (family, key) pair where key is a tuple in the schema's feature-column order of the
family (schema.FAMILY_COLUMNS). A mixed prefill+decode attention call yields two parts whose
durations are added; every other op yields one.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any

DESCRIPTOR_VERSION = 1

DTYPE_ALIASES = {
    "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "tf32": "tf32", "fp8": "fp8",
    "fp8_e4m3": "fp8", "e4m3": "fp8", "float8_e4m3fn": "fp8", "fp8_e5m2": "fp8", "e5m2": "fp8",
    "int8": "int8", "auto": "auto",
}
COLLECTIVE_KINDS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv", "broadcast")
TOPOLOGIES = ("nvswitch", "pairwise_nvlink", "pcie")
DIRECTIONS = ("h2d", "d2h", "d2d")
SMALL_OPS = ("norm", "activation", "rotary", "elementwise", "embedding")
# Bytes moved per (token x hidden) element when a small op gives no "bytes": norm reads and
# writes; silu_and_mul reads 2h and writes h; rotary rewrites q and k; add reads 2, writes 1.
SMALL_BYTES_FACTOR = {"norm": 2, "activation": 3, "rotary": 2, "elementwise": 3, "embedding": 1}
OPS = ("gemm", "attention", "collective", "memcpy") + SMALL_OPS


class DescriptorError(ValueError):
    """A descriptor is malformed; the message names the field."""


def _int(op: dict, name: str, default: Any = ..., minimum: int = 0) -> int:
    v = op.get(name, default)
    if type(v) is int and v >= minimum:  # NOTE: the hot path (bool is not int by type)
        return v
    if v is ...:
        raise DescriptorError(f"{op.get('op')}: missing field {name!r}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (
            isinstance(v, float) and (not math.isfinite(v) or v != int(v))):
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be an integer, got {v!r}")
    v = int(v)
    if v < minimum:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be >= {minimum}, got {v}")
    return v


def _choice(op: dict, name: str, choices: tuple[str, ...] | dict, default: Any = ...) -> str:
    v = op.get(name, default)
    if isinstance(choices, dict) and type(v) is str:
        c = choices.get(v)
        if c is not None:  # the hot path: an exact (lower-case) name
            return c
    if v is ...:
        raise DescriptorError(f"{op.get('op')}: missing field {name!r}")
    if isinstance(choices, dict):
        if not isinstance(v, str) or v.lower() not in choices:
            raise DescriptorError(f"{op.get('op')}: field {name!r} must be one of "
                                  f"{sorted(set(choices))}, got {v!r}")
        return choices[v.lower()]
    if v not in choices:
        raise DescriptorError(f"{op.get('op')}: field {name!r} must be one of {list(choices)}, "
                              f"got {v!r}")
    return v


def _int_list(op: dict, name: str) -> list[int] | None:
    v = op.get(name)
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not v:
        raise DescriptorError(f"attention: field {name!r} must be a non-empty list of integers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise DescriptorError(f"attention: field {name!r} must hold non-negative integers, "
                                  f"got {x!r}")
        out.append(x)
    return out


def _attention_key(q: list[int], kv: list[int], heads: int, kv_heads: int, head_dim: int,
                   dtype: str, kv_dtype: str) -> tuple:
    pairs = float(sum(qi * (ki - (qi - 1) / 2.0) for qi, ki in zip(q, kv)))
    return (len(q), sum(q), sum(kv), max(kv), pairs, heads, kv_heads, head_dim, dtype, kv_dtype)


def _attention(op: dict) -> list[tuple[str, tuple]]:
    heads = _int(op, "num_heads", minimum=1)
    kv_heads = _int(op, "num_kv_heads", heads, minimum=1)
    head_dim = _int(op, "head_dim", minimum=1)
    dtype = _choice(op, "dtype", DTYPE_ALIASES, "bf16")
    kv_dtype = _choice(op, "kv_cache_dtype", DTYPE_ALIASES, "auto")
    phase = op.get("phase")
    if phase is not None and phase not in ("prefill", "decode", "mixed"):
        raise DescriptorError(f"attention: field 'phase' must be prefill, decode or mixed, "
                              f"got {phase!r}")
    seq = _int_list(op, "seq_lens")
    if seq is None:
        seq = _int_list(op, "context_lens")
    if seq is not None:
        q = _int_list(op, "query_lens")
        if q is None:
            if phase == "decode":
                q = [1] * len(seq)
            elif len(seq) == 1 and "num_tokens" in op:
                q = [_int(op, "num_tokens", minimum=1)]
            else:
                raise DescriptorError("attention: field 'query_lens' is needed with 'seq_lens' "
                                      "unless phase is decode")
        if len(q) != len(seq):
            raise DescriptorError(f"attention: 'query_lens' has {len(q)} entries, "
                                  f"'seq_lens' {len(seq)}")
        for qi, ki in zip(q, seq):
            if qi < 1 or ki < qi:
                raise DescriptorError(f"attention: each seq_lens entry must be >= its query_lens "
                                      f"entry >= 1, got seq {ki} for query {qi}")
        dec = [(qi, ki) for qi, ki in zip(q, seq) if qi == 1]
        pre = [(qi, ki) for qi, ki in zip(q, seq) if qi > 1]
        parts = []
        if pre:
            parts.append(("attention_prefill", _attention_key(
                [a for a, _ in pre], [b for _, b in pre], heads, kv_heads, head_dim, dtype,
                kv_dtype)))
        if dec:
            fam = "attention_prefill" if phase == "prefill" and not pre else "attention_decode"
            parts.append((fam, _attention_key([a for a, _ in dec], [b for _, b in dec], heads,
                                              kv_heads, head_dim, dtype, kv_dtype)))
        return parts
    # Summary statistics instead of per-sequence lists.
    if phase not in ("prefill", "decode"):
        raise DescriptorError("attention: field 'phase' (prefill|decode) is needed when the batch "
                              "is given by summary fields instead of 'seq_lens'")
    bs = _int(op, "batch_size", 1, minimum=1)
    ntok = _int(op, "num_tokens", bs if phase == "decode" else ..., minimum=1)
    if "kv_len_sum" in op:
        kv_sum = _int(op, "kv_len_sum", minimum=1)
    else:
        kv_sum = _int(op, "kv_len_max", minimum=1) * bs
    kv_max = _int(op, "kv_len_max", -(-kv_sum // bs), minimum=1)
    if "attn_pairs" in op:
        pairs = op["attn_pairs"]
        if not isinstance(pairs, (int, float)) or isinstance(pairs, bool) or pairs < 0:
            raise DescriptorError(f"attention: field 'attn_pairs' must be a number >= 0")
        pairs = float(pairs)
    else:
        qm, km = ntok / bs, kv_sum / bs
        pairs = bs * qm * (km - (qm - 1) / 2.0)
    fam = "attention_prefill" if phase == "prefill" else "attention_decode"
    return [(fam, (bs, ntok, kv_sum, kv_max, pairs, heads, kv_heads, head_dim, dtype, kv_dtype))]


def normalize(op: Any) -> list[tuple[str, tuple]]:
    """Validates one descriptor and returns its (family, key) parts.

    Raises:
        DescriptorError: naming the offending field.
    """
    if not isinstance(op, dict):
        raise DescriptorError(f"an op descriptor must be a map, got {type(op).__name__}")
    kind = op.get("op")
    if kind == "gemm":
        return [("gemm", (_int(op, "m"), _int(op, "n"), _int(op, "k"),
                          _choice(op, "dtype", DTYPE_ALIASES, "bf16"),
                          _int(op, "batch", 1, minimum=1)))]
    if kind == "attention":
        return _attention(op)
    if kind in SMALL_OPS:
        dtype = _choice(op, "dtype", DTYPE_ALIASES, "bf16")
        tokens = _int(op, "tokens", None) if op.get("tokens") is not None else None
        hidden = _int(op, "hidden", None) if op.get("hidden") is not None else None
        if "bytes" in op:
            nbytes = _int(op, "bytes")
        elif tokens is not None and hidden is not None:
            elt = 1 if dtype in ("fp8", "int8") else 4 if dtype in ("fp32", "tf32") else 2
            nbytes = SMALL_BYTES_FACTOR[kind] * tokens * hidden * elt
        else:
            raise DescriptorError(f"{kind}: give field 'bytes', or both 'tokens' and 'hidden'")
        return [(kind, (tokens, hidden, nbytes, dtype))]
    if kind == "collective":
        ranks = _int(op, "ranks", minimum=1)
        return [("collective", (_choice(op, "kind", COLLECTIVE_KINDS), _int(op, "bytes"), ranks,
                                _int(op, "ranks_per_node", min(ranks, 8), minimum=1),
                                _choice(op, "topology", TOPOLOGIES, "nvswitch")))]
    if kind == "memcpy":
        return [("memcpy", (_int(op, "bytes"), _choice(op, "direction", DIRECTIONS)))]
    if kind is None:
        raise DescriptorError("missing field 'op'")
    raise DescriptorError(f"field 'op' must be one of {list(OPS)}, got {kind!r}")


class _Slow(Exception):
    """The batch fast path cannot vouch for a value: redo the batch op by op."""


def _get(sub: list[dict], name: str, default: Any = ...) -> list:
    # NOTE: map(dict.get, ...) runs the loop in C: ~25 ns an op against ~65 for a
    # comprehension; a missing required field reads as Ellipsis, which no check accepts
    n = len(sub)
    return list(map(dict.get, sub, repeat(name, n), repeat(default, n)))


def _has(sub: list[dict], name: str) -> list[bool]:
    return list(map(dict.__contains__, sub, repeat(name, len(sub))))


def _ints(sub: list[dict], name: str, minimum: int = 0, default: Any = ...) -> list[int]:
    vals = _get(sub, name, default)
    if set(map(type, vals)) != {int} or min(vals) < minimum:
        raise _Slow
    return vals


def _ints_default(sub: list[dict], name: str, defaults: list, minimum: int) -> list[int]:
    vals = list(map(dict.get, sub, repeat(name, len(sub)), defaults))
    if set(map(type, vals)) != {int} or min(vals) < minimum:
        raise _Slow
    return vals


def _aliases(sub: list[dict], name: str, default: str) -> list[str]:
    vals = list(map(DTYPE_ALIASES.get, _get(sub, name, default)))
    if None in vals:
        raise _Slow
    return vals


def _choices(sub: list[dict], name: str, choices: frozenset, default: Any = ...) -> list[str]:
    vals = _get(sub, name, default)
    if not set(vals) <= choices:
        raise _Slow
    return vals


_KINDS = frozenset(COLLECTIVE_KINDS)
_TOPOS = frozenset(TOPOLOGIES)
_DIRS = frozenset(DIRECTIONS)
_PHASES = frozenset(("prefill", "decode"))
_SMALL_ELT = {"fp8": 1, "int8": 1, "fp32": 4, "tf32": 4}


def _batch_gemm(sub: list[dict]) -> list[list[tuple[str, tuple]]]:
    keys = zip(_ints(sub, "m"), _ints(sub, "n"), _ints(sub, "k"), _aliases(sub, "dtype", "bf16"),
               _ints(sub, "batch", 1, 1))
    return [[("gemm", k)] for k in keys]


def _batch_collective(sub: list[dict]) -> list[list[tuple[str, tuple]]]:
    ranks = _ints(sub, "ranks", 1)
    rpn = _ints_default(sub, "ranks_per_node", [r if r < 8 else 8 for r in ranks], 1)
    keys = zip(_choices(sub, "kind", _KINDS), _ints(sub, "bytes"), ranks, rpn,
               _choices(sub, "topology", _TOPOS, "nvswitch"))
    return [[("collective", k)] for k in keys]


def _batch_memcpy(sub: list[dict]) -> list[list[tuple[str, tuple]]]:
    return [[("memcpy", k)] for k in zip(_ints(sub, "bytes"), _choices(sub, "direction", _DIRS))]


def _batch_small(kind: str, sub: list[dict]) -> list[list[tuple[str, tuple]]]:
    dtype = _aliases(sub, "dtype", "bf16")
    has_bytes = _has(sub, "bytes")
    if all(has_bytes):
        nbytes = _ints(sub, "bytes")
        toks = _get(sub, "tokens", None)
        hidden = _get(sub, "hidden", None)
        if not set(map(type, toks)) <= {int, type(None)} or \
                not set(map(type, hidden)) <= {int, type(None)} or \
                min((t for t in toks + hidden if t is not None), default=0) < 0:
            raise _Slow
    elif not any(has_bytes):
        toks = _ints(sub, "tokens")
        hidden = _ints(sub, "hidden")
        f = SMALL_BYTES_FACTOR[kind]
        nbytes = [f * t * h * _SMALL_ELT.get(d, 2) for t, h, d in zip(toks, hidden, dtype)]
    else:
        raise _Slow
    return [[(kind, k)] for k in zip(toks, hidden, nbytes, dtype)]


def _batch_attention(sub: list[dict]) -> list[list[tuple[str, tuple]]]:
    """Attention given by summary fields (no per-sequence lists, no attn_pairs)."""
    if any(_has(sub, "seq_lens")) or any(_has(sub, "context_lens")) or \
            any(_has(sub, "attn_pairs")):
        raise _Slow
    phase = _choices(sub, "phase", _PHASES, None)
    heads = _ints(sub, "num_heads", 1)
    kvh = _ints_default(sub, "num_kv_heads", heads, 1)
    hd = _ints(sub, "head_dim", 1)
    dtype = _aliases(sub, "dtype", "bf16")
    kvdt = _aliases(sub, "kv_cache_dtype", "auto")
    bs = _ints(sub, "batch_size", 1, 1)
    ntok = _ints_default(sub, "num_tokens", [b if p == "decode" else ... for b, p in
                                            zip(bs, phase)], 1)
    has_sum = _has(sub, "kv_len_sum")
    if all(has_sum):
        kv_sum = _ints(sub, "kv_len_sum", 1)
    elif not any(has_sum):
        kv_sum = [m * b for m, b in zip(_ints(sub, "kv_len_max", 1), bs)]
    else:
        raise _Slow
    kv_max = _ints_default(sub, "kv_len_max", [-(-s // b) for s, b in zip(kv_sum, bs)], 1)
    # NOTE: the same float expression as _attention, so the keys are bit-identical
    pairs = [b * (q / b) * ((s / b) - ((q / b) - 1) / 2.0) for b, q, s in zip(bs, ntok, kv_sum)]
    fams = ["attention_prefill" if p == "prefill" else "attention_decode" for p in phase]
    return [[(f, k)] for f, k in zip(fams, zip(bs, ntok, kv_sum, kv_max, pairs, heads, kvh, hd,
                                                dtype, kvdt))]


def _indexed(op: Any, i: int) -> list[tuple[str, tuple]]:
    try:
        return normalize(op)
    except DescriptorError as e:
        raise DescriptorError(f"ops[{i}]: {e}") from None


def normalize_batch(ops: list) -> list[list[tuple[str, tuple]]]:
    """normalize() of every op of a batch, validated and converted a field at a time.

    Ops are grouped by kind and each field is read and checked for the whole group at once
    (types by set(map(type, ...)), ranges by min()); the keys are the ones normalize() gives,
    bit for bit. NOTE: whenever the fast path cannot vouch for a value (a float where an
    integer is expected, an upper-case dtype, a missing field, per-sequence lists ...), the
    group, or on an error the whole batch, is redone op by op, so errors and their messages
    are exactly normalize()'s, for the first bad op.

    Raises:
        DescriptorError: "ops[i]: ..." for the first malformed op.
    """
    n = len(ops)
    try:
        if set(map(type, ops)) != {dict}:
            raise _Slow
        kinds = _get(ops, "op", None)
        groups: dict[Any, list[int]] = {}
        if len(set(kinds)) == 1:
            groups[kinds[0]] = list(range(n))
        else:
            for i, k in enumerate(kinds):
                g = groups.get(k)
                if g is None:
                    groups[k] = [i]
                else:
                    g.append(i)
    except (_Slow, TypeError):
        return [_indexed(op, i) for i, op in enumerate(ops)]
    out: list = [None] * n
    try:
        for kind, idx in groups.items():
            sub = ops if len(idx) == n else [ops[i] for i in idx]
            try:
                if kind == "gemm":
                    res = _batch_gemm(sub)
                elif kind == "attention":
                    res = _batch_attention(sub)
                elif kind == "collective":
                    res = _batch_collective(sub)
                elif kind in SMALL_OPS:
                    res = _batch_small(kind, sub)
                elif kind == "memcpy":
                    res = _batch_memcpy(sub)
                else:
                    raise _Slow
            except (_Slow, TypeError):
                res = [normalize(op) for op in sub]
            for i, r in zip(idx, res):
                out[i] = r
    except DescriptorError:
        return [_indexed(op, i) for i, op in enumerate(ops)]
    return out
