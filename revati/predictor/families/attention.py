"""Attention: the prefill and decode families, one descriptor op ("attention").

Key (both families): batch_size, num_tokens (new, query, tokens of the step), kv_len_sum /
kv_len_max (keys each query attends over, summed / max over sequences, new tokens
included), attn_pairs ((query, key) pairs under the causal mask, sum_i q_i * (kv_i - (q_i -
1) / 2)), num_heads, num_kv_heads, head_dim (per GPU, after tensor parallelism), dtype,
kv_cache_dtype.

A descriptor gives the batch per sequence (seq_lens or context_lens, with query_lens) or by
summary fields (batch_size, num_tokens, kv_len_sum / kv_len_max, attn_pairs). Per-sequence
lists split into a prefill part (query > 1) and a decode part (query 1), whose durations
add; a phase "prefill" batch of decode-only sequences stays prefill.

Physics: FLOPs 4·attn_pairs·num_heads·head_dim (QK^T and PV over the causal pairs); bytes
2·kv_len_sum·num_kv_heads·head_dim·kv bytes (K and V of every key, read once) +
2·num_tokens·num_heads·head_dim·dtype bytes (Q read, O written).

Grids: decode is a dense 3-D grid per head layout (batch x mean keys x skew, cached on disk);
prefill rounds each size above PREFILL_EXACT_BELOW to a 2^(1/128) bucket and memoises the
model value of the rounded op (see grids.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor import grids
from revati.predictor.families.base import (
    CHOICE, DTYPE, INT, INT_LIST, NUMBER, DescriptorError, Family, Field, From, Op, Part, Slow,
    dtype_arrays, elt, floats, has_many, log2, make_keys, rate, read, read_many)
from revati.predictor.roofline import (
    COMPUTE_EFFICIENCY, DTYPE_BYTES, LAUNCH_OVERHEAD_US, MEMORY_EFFICIENCY, Peaks,
    attention_ideal_us)

PREFILL, DECODE = "attention_prefill", "attention_decode"
FAMILIES = (PREFILL, DECODE)


class AttentionKey(NamedTuple):
    batch_size: int
    num_tokens: int
    kv_len_sum: int
    kv_len_max: int
    attn_pairs: float
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    kv_cache_dtype: str


FIELDS = (
    Field("num_heads", INT, minimum=1, doc="query heads per GPU"),
    Field("num_kv_heads", INT, From("num_heads"), minimum=1, doc="KV heads per GPU"),
    Field("head_dim", INT, minimum=1),
    Field("dtype", DTYPE, "bf16"),
    Field("kv_cache_dtype", DTYPE, "auto"),
    Field("phase", CHOICE, None, choices=("prefill", "decode", "mixed")),
    Field("seq_lens", INT_LIST, doc="keys of each sequence, new tokens included"),
    Field("context_lens", INT_LIST, doc="the same as seq_lens (the name vLLM uses)"),
    Field("query_lens", INT_LIST, doc="new tokens of each sequence"),
    Field("batch_size", INT, 1, minimum=1, doc="summary form: sequences"),
    Field("num_tokens", INT, minimum=1, doc="summary form: new tokens (default: batch_size "
                                            "for decode)"),
    Field("kv_len_sum", INT, minimum=1, doc="summary form: keys summed over sequences "
                                            "(default kv_len_max x batch_size)"),
    Field("kv_len_max", INT, minimum=1, doc="summary form: keys of the longest sequence "
                                            "(default ceil(kv_len_sum / batch_size))"),
    Field("attn_pairs", NUMBER, doc="summary form: causal (query, key) pairs (default: "
                                    "those of equal sequences)", maximum=2 ** 62),
)
F = {f.name: f for f in FIELDS}
_SUMMARY_PHASES = Field("phase", CHOICE, None, choices=("prefill", "decode"))


def _key(q: list[int], kv: list[int], heads: int, kv_heads: int, head_dim: int, dtype: str,
         kv_dtype: str) -> AttentionKey:
    pairs = float(sum(qi * (ki - (qi - 1) / 2.0) for qi, ki in zip(q, kv)))
    # NOTE: tuple.__new__, not AttentionKey(...): a C call, not NamedTuple's Python __new__
    return tuple.__new__(AttentionKey, (len(q), sum(q), sum(kv), max(kv), pairs, heads,
                                        kv_heads, head_dim, dtype, kv_dtype))


def parse(op: dict) -> list[Part]:
    heads = read(op, F["num_heads"])
    kv_heads = read(op, F["num_kv_heads"], default=heads)
    head_dim = read(op, F["head_dim"])
    dtype = read(op, F["dtype"])
    kv_dtype = read(op, F["kv_cache_dtype"])
    phase = op.get("phase")
    if phase is not None and phase not in F["phase"].choices:
        raise DescriptorError(f"attention: field 'phase' must be prefill, decode or mixed, "
                              f"got {phase!r}")
    seq = read(op, F["seq_lens"])
    if seq is None:
        seq = read(op, F["context_lens"])
    if seq is not None:
        q = read(op, F["query_lens"])
        if q is None:
            if phase == "decode":
                q = [1] * len(seq)
            elif len(seq) == 1 and "num_tokens" in op:
                q = [read(op, F["num_tokens"])]
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
        parts: list[Part] = []
        if pre:
            parts.append((PREFILL, _key([a for a, _ in pre], [b for _, b in pre], heads,
                                        kv_heads, head_dim, dtype, kv_dtype)))
        if dec:
            fam = PREFILL if phase == "prefill" and not pre else DECODE
            parts.append((fam, _key([a for a, _ in dec], [b for _, b in dec], heads, kv_heads,
                                    head_dim, dtype, kv_dtype)))
        return parts
    # Summary statistics instead of per-sequence lists.
    if phase not in _SUMMARY_PHASES.choices:
        raise DescriptorError("attention: field 'phase' (prefill|decode) is needed when the batch "
                              "is given by summary fields instead of 'seq_lens'")
    bs = read(op, F["batch_size"])
    ntok = read(op, F["num_tokens"], default=bs if phase == "decode" else ...)
    if "kv_len_sum" in op:
        kv_sum = read(op, F["kv_len_sum"])
    else:
        kv_sum = read(op, F["kv_len_max"]) * bs
    kv_max = read(op, F["kv_len_max"], default=-(-kv_sum // bs))
    if "attn_pairs" in op:
        pairs = read(op, F["attn_pairs"])
    else:
        qm, km = ntok / bs, kv_sum / bs
        pairs = bs * qm * (km - (qm - 1) / 2.0)
    fam = PREFILL if phase == "prefill" else DECODE
    return [(fam, tuple.__new__(AttentionKey, (bs, ntok, kv_sum, kv_max, pairs, heads, kv_heads,
                                               head_dim, dtype, kv_dtype)))]


def parse_batch(sub: list[dict]) -> list[list[Part]]:
    """Attention given by summary fields (no per-sequence lists)."""
    if any(has_many(sub, "seq_lens")) or any(has_many(sub, "context_lens")):
        raise Slow
    done: dict = {"phase": read_many(sub, _SUMMARY_PHASES)}
    for name in ("num_heads", "num_kv_heads", "head_dim", "dtype", "kv_cache_dtype",
                 "batch_size"):
        done[name] = read_many(sub, F[name], done)
    bs, phase = done["batch_size"], done["phase"]
    ntok = read_many(sub, F["num_tokens"],
                     defaults=[b if p == "decode" else ... for b, p in zip(bs, phase)])
    has_sum = has_many(sub, "kv_len_sum")
    if all(has_sum):
        kv_sum = read_many(sub, F["kv_len_sum"])
    elif not any(has_sum):
        kv_sum = [m * b for m, b in zip(read_many(sub, F["kv_len_max"]), bs)]
    else:
        raise Slow
    kv_max = read_many(sub, F["kv_len_max"], defaults=[-(-s // b) for s, b in zip(kv_sum, bs)])
    # NOTE: the same float expression as parse(), so the keys are bit-identical; the pairs
    # of an op that gives attn_pairs are its own (the shim's descriptors do)
    pairs = [b * (q / b) * ((s / b) - ((q / b) - 1) / 2.0) for b, q, s in zip(bs, ntok, kv_sum)]
    if any(has_many(sub, "attn_pairs")):
        pairs = read_many(sub, F["attn_pairs"], defaults=pairs)
    fams = [PREFILL if p == "prefill" else DECODE for p in phase]
    keys = make_keys(AttentionKey, [bs, ntok, kv_sum, kv_max, pairs, done["num_heads"],
                                    done["num_kv_heads"], done["head_dim"], done["dtype"],
                                    done["kv_cache_dtype"]])
    return [[(f, k)] for f, k in zip(fams, keys)]


OP = Op("attention", FIELDS, parse, parse_batch, FAMILIES)


def describe(key: tuple) -> dict:
    """The summary descriptor of a key (phase from the family, given by the caller)."""
    return {"op": "attention", **AttentionKey(*key)._asdict()}


def decode_step(key: tuple) -> AttentionKey:
    """The decode step over the same sequences as `key`, one new token each."""
    k = AttentionKey(*key)
    return k._replace(num_tokens=k.batch_size, attn_pairs=float(k.kv_len_sum))


# ---- ideal time, features ----

def attention_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    eb, tf = dtype_arrays(p, c["dtype"])
    ekv = np.array([DTYPE_BYTES.get(d, 2) if d != "auto" else 0 for d in c["kv_cache_dtype"]])
    ekv = np.where(ekv == 0, eb, ekv)
    comp = 4.0 * c["attn_pairs"] * c["num_heads"] * c["head_dim"] / (tf * 1e6)
    mem = (2.0 * c["kv_len_sum"] * c["num_kv_heads"] * c["head_dim"] * ekv
           + 2.0 * c["num_tokens"] * c["num_heads"] * c["head_dim"] * eb) / (p.mem_bw_gbps * 1e3)
    return np.maximum(comp, mem)


def derived_sizes(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Attention sizes that combine columns, whose training ranges are kept beside the
    columns' own: K/V elements read (keys x KV heads x head dim) and (query, key) products
    computed (causal pairs x query heads x head dim)."""
    return {"kv_elements": c["kv_len_sum"] * c["num_kv_heads"] * c["head_dim"],
            "qk_elements": c["attn_pairs"] * c["num_heads"] * c["head_dim"]}


def attention_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    eb, _ = dtype_arrays(p, c["dtype"])
    b, q, kvm = c["batch_size"], c["num_tokens"], c["kv_len_max"]
    heads, kv_heads = c["num_heads"], c["num_kv_heads"]
    cols = [
        log2(q), log2(b), log2(c["kv_len_sum"]),
        log2(kvm), log2(c["attn_pairs"]), heads, kv_heads,
        c["head_dim"], log2(attention_ideal(p, c)),
        log2(c["attn_pairs"] * heads * c["head_dim"]),
        log2(c["kv_len_sum"] * kv_heads * c["head_dim"]), eb,
    ]
    names = ["log_tokens", "log_batch", "log_kv_sum", "log_kv_max", "log_pairs", "heads",
             "kv_heads", "head_dim", "log_ideal", "log_qk_work", "log_kv_bytes", "elt_bytes"]
    # FlashAttention-style tiling: one CTA per (sequence, head, 128-query tile) walks the keys
    # of its sequence block by block, so the time goes with waves of CTAs x key blocks of the
    # longest sequence (a decode CTA per (sequence, kv head)). Every such feature is
    # non-decreasing in tokens, keys and heads.
    q_tiles = np.ceil(q / np.maximum(b, 1) / 128.0)
    ctas = b * heads * q_tiles
    waves = np.ceil(ctas / p.sm_count)
    for blk in (16, 64, 128, 256):
        nb = np.ceil(kvm / blk)
        cols += [log2(nb), log2(b * kv_heads * nb), log2(waves * nb),
                 log2(np.ceil(b * kv_heads / p.sm_count) * nb)]
        names += [f"log_kvb{blk}", f"log_seq_kvb{blk}", f"log_waves_kvb{blk}",
                  f"log_kvwaves_kvb{blk}"]
    cols += [log2(b * kv_heads), log2(ctas), log2(waves), log2(q_tiles)]
    names += ["log_seq_kvheads", "log_ctas", "log_waves", "log_q_tiles"]
    return np.column_stack(cols), names


ATTENTION_MONOTONE = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0] + [1] * 20
SIZE_COLUMNS = ("batch_size", "num_tokens", "kv_len_sum", "kv_len_max", "attn_pairs",
                "num_heads", "num_kv_heads", "head_dim")


# ---- physics, fallback ----

def bytes_flops(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    cols = list(zip(*keys))
    q, s, pairs = floats(cols[1]), floats(cols[2]), floats(cols[4])
    h, kvh, hd = floats(cols[5]), floats(cols[6]), floats(cols[7])
    e = elt(cols[8])
    ekv = np.where(np.array([d == "auto" for d in cols[9]]), e, elt(cols[9]))
    nbytes = 2.0 * s * kvh * hd * ekv + 2.0 * q * h * hd * e
    return nbytes, 4.0 * pairs * h * hd


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    mem = nbytes / (p.mem_bw_gbps * 1e3)
    return np.maximum(mem, flops / rate(p, [k[8] for k in keys]))


def fallback(p: Peaks, f: dict) -> float:
    c, m = attention_ideal_us(p, f["num_tokens"], f["kv_len_sum"], f["attn_pairs"],
                              f["num_heads"], f["num_kv_heads"], f["head_dim"],
                              f["dtype"], f["kv_cache_dtype"])
    return max(c / COMPUTE_EFFICIENCY, m / MEMORY_EFFICIENCY) + LAUNCH_OVERHEAD_US


# ---- clipping into the training range (inference.predict_keys) ----

def preclip(ranges: dict[str, list[float]], cols: dict[str, np.ndarray]):
    """Attention queries beyond the measured key lengths or head counts, shrunk consistently
    into an op the model has seen, whose roofline ratio to the query then carries the rest.

    * KV heads or a head dim outside the data's (f = value / the value clipped into its
      range; f > 1 above, f < 1 below): folded into the keys. The op with f times the keys
      (kv_len_sum, kv_len_max, attn_pairs) and 1/f the query and KV heads (or 1/f the head
      dim) moves the same K/V bytes, does the same FLOPs and has the same query heads per KV
      head (GQA packing); only its Q/O bytes change. NOTE: this replaced clipping the heads
      and scaling by sqrt(heads ratio x KV-heads ratio), which under-predicted memory-bound
      decode by up to 2.3x (A100's data has 4 KV heads, so a 32/32 decode, 8x the bytes, was
      served at 2.8x: Llama-2-7B, 128 x 700 keys on H100 through the A100 proxy, 233 us
      against a 438 us bound) and over-predicted MQA (1 KV head served as 4); and clipping
      the head dim, which served a head dim 64 decode as head dim 128 (every H100 and A100 row
      has 128): 16/16/64 heads at 32 x 1000 keys 99.5 us on H100, against 55.0 us for 8/8/128,
      which moves the same bytes.
    * More query heads than the data has: clipped; the roofline ratio carries them.
    * K/V elements read or (query, key) products computed beyond the data's largest (a
      combination of in-range columns, derived_sizes): the keys shrink by the same factor as
      for too long sequences, below.
    * A batch above the range loses whole sequences (batch, tokens, keys and pairs by one
      factor), and the keys of every sequence are scaled by one factor f <= 1 (kv_len_max,
      kv_len_sum, attn_pairs, and new tokens beyond the keys), so the clipped op is a real,
      smaller op. (Clipping kv_len_max or batch_size alone would leave kv_len_sum, and the
      roofline ratio, unchanged, so a longer context or a bigger batch would not cost more.)

    Returns:
        (cols, the pre-clipped cols, above mask, an extra factor (ones)). The caller scales
        the clipped op's time by max(1, ideal(cols) / ideal(clipped)); every step above only
        lowers the roofline time, so that ratio is >= 1, and a clipped prediction at or
        above its own bound is served at or above the query's.
    """
    r = ranges
    clipped = dict(cols)
    above = np.zeros(len(cols["kv_len_max"]), dtype=bool)
    fk = np.ones(len(above))
    fd = np.ones(len(above))
    if "num_kv_heads" in r:
        lo, hi = r["num_kv_heads"]
        fk = cols["num_kv_heads"] / np.clip(cols["num_kv_heads"], lo, hi)
    if "head_dim" in r:
        lo, hi = r["head_dim"]
        fd = cols["head_dim"] / np.clip(cols["head_dim"], lo, hi)
    fold = fk * fd
    above |= fold != 1.0
    for c in ("kv_len_sum", "kv_len_max", "attn_pairs"):
        clipped[c] = cols[c] * fold
    clipped["num_heads"] = cols["num_heads"] / fk
    clipped["num_kv_heads"] = cols["num_kv_heads"] / fk
    clipped["head_dim"] = cols["head_dim"] / fd
    if "num_heads" in r:
        hi = r["num_heads"][1]
        above |= clipped["num_heads"] > hi
        clipped["num_heads"] = np.minimum(clipped["num_heads"], hi)
    if "batch_size" in r:  # drop whole sequences: batch, tokens, keys and pairs by one factor
        g = np.minimum(1.0, r["batch_size"][1] / np.maximum(clipped["batch_size"], 1))
        above |= g < 1.0
        for c in ("batch_size", "num_tokens", "kv_len_sum", "attn_pairs"):
            clipped[c] = clipped[c] * g
    kvm, kvs = clipped["kv_len_max"], clipped["kv_len_sum"]
    f = np.ones_like(kvm)
    if "kv_len_max" in r:
        f = np.minimum(f, r["kv_len_max"][1] / np.maximum(kvm, 1e-9))
    if "kv_len_sum" in r:
        f = np.minimum(f, r["kv_len_sum"][1] / np.maximum(kvs, 1e-9))
    # the same factor shrinks the K/V read and the (query, key) products
    for name, v in derived_sizes(clipped).items():
        if name in r:
            f = np.minimum(f, r[name][1] / np.maximum(v, 1e-9))
    above |= f < 1.0
    b = np.maximum(clipped["batch_size"], 1)
    q = clipped["num_tokens"]
    clipped["kv_len_max"] = kvm * f
    clipped["kv_len_sum"] = kvs * f
    clipped["num_tokens"] = np.maximum(np.minimum(q, clipped["kv_len_sum"]), np.minimum(b, q))
    # NOTE: the causal pairs of the op as shrunk, not the pairs times the factors: a fresh
    # prefill whose keys (and so tokens) shrink by f has f^2 the pairs, and pairs x f made the
    # clipped op's roofline time too big, so the ratio that scales it back was too small
    # (A100, 16384 fresh tokens: served at 0.66x its FLOPs bound). The batch's own departure
    # from an even split is kept. (A decode step's pairs are its keys: the same either way.)
    b0 = np.maximum(cols["batch_size"], 1)
    even0 = _even_pairs(b0, cols["num_tokens"], cols["kv_len_sum"])
    even1 = _even_pairs(b, clipped["num_tokens"], clipped["kv_len_sum"])
    changed = (fold != 1.0) | (f < 1.0) | (b != b0)
    clipped["attn_pairs"] = np.where(changed, cols["attn_pairs"] * even1 /
                                     np.maximum(even0, 1e-9), cols["attn_pairs"])
    return cols, clipped, above, np.ones_like(kvm)


def _even_pairs(b: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Causal (query, key) pairs of b equal sequences holding q new tokens and s keys."""
    qm, km = q / b, s / b
    return b * qm * (km - (qm - 1.0) / 2.0)


# ---- grids ----

DECODE_B_AXIS = np.log2(np.concatenate([np.arange(1, 65), 2 ** (np.arange(49, 97) / 8.0)]))
DECODE_MEAN_AXIS = np.arange(0, 20 * 16 + 1) / 16.0
DECODE_SKEW_AXIS = np.log2(np.array([1, 1.05, 1.1, 1.25, 1.5, 2, 3, 4, 8, 16, 64, 256]))
PREFILL_STEPS_PER_OCTAVE = 128
PREFILL_EXACT_BELOW = 4096


class DecodeGrid(grids.GridSpec):
    """Shape (heads, kv heads, head dim, dtype, kv dtype) -> batch x mean keys per sequence x
    skew (kv_len_max / mean), trilinear in log space, non-decreasing along length and skew
    by a running maximum, persisted on disk."""

    cached = True

    def coords(self, keys: list[tuple]):
        cols = list(zip(*keys))
        b, q, s_, mx, pairs = (np.array(cols[i], dtype=np.float64) for i in range(5))
        valid = (q == b) & (b >= 1) & (s_ >= b) & (np.abs(pairs - s_) <= 1e-9 * s_)
        bb = np.maximum(b, 1.0)
        mean = np.maximum(s_, 1.0) / bb
        coords = np.column_stack([np.log2(bb), np.log2(mean),
                                  np.log2(np.maximum(mx / mean, 1.0))])
        return valid, coords, list(zip(*cols[5:]))

    def build(self, fg: grids.FamilyGrids, family: str, shape: tuple) -> grids.Grid:
        heads, kvh, hd, dt, kvdt = shape

        def keys_of(c: list[np.ndarray]) -> list[tuple]:
            b, mean = 2.0 ** c[0], 2.0 ** c[1]
            skew = np.minimum(2.0 ** c[2], b)
            kv_sum = b * mean
            kv_max = np.maximum(mean * skew, 1.0)
            return [(bb, bb, s, mx, s, heads, kvh, hd, dt, kvdt)
                    for bb, s, mx in zip(b.tolist(), kv_sum.tolist(), kv_max.tolist())]

        return fg.build(family, shape, [DECODE_B_AXIS, DECODE_MEAN_AXIS, DECODE_SKEW_AXIS],
                        keys_of, monotone_axes=(1, 2))


class PrefillGrid(grids.GridSpec):
    """No dense grid: each size above PREFILL_EXACT_BELOW is rounded to the nearest
    2^(1/PREFILL_STEPS_PER_OCTAVE) bucket (the batch, and smaller sizes, exact) and the model
    value of the rounded op is memoised, so a bucket costs one (batched) model call, ever."""

    def lookup(self, fg: grids.FamilyGrids, family: str, keys: list[tuple]):
        n = len(keys)
        us = np.zeros(n)
        ext = np.zeros(n, dtype=bool)
        q = PREFILL_STEPS_PER_OCTAVE
        qkeys = []
        for k in keys:
            r = [k[0]]
            for v in k[1:5]:
                r.append(2.0 ** (round(math.log2(v) * q) / q) if v > PREFILL_EXACT_BELOW
                         else v)
            qkeys.append(tuple(r) + tuple(k[5:]))
        memo = fg.memo
        missing = sorted({qk for qk in qkeys if qk not in memo}, key=repr)
        if missing:
            fg.model_ops += sum(1 for qk in qkeys if qk not in memo)
            v, above, reasons = fg.model_fn(family, missing)
            fg.memo_reasons = list(reasons)
            for qk, vv, aa in zip(missing, v, above):
                memo[qk] = (float(vv), bool(aa))
        for i, qk in enumerate(qkeys):
            us[i], ext[i] = memo[qk]
        reasons = {r: n for r in fg.memo_reasons}
        return us, np.ones(n, dtype=bool), ext, reasons


def _family(name: str, grid: grids.GridSpec, **kw) -> Family:
    return Family(
        name, AttentionKey, lambda key: dict(describe(key), phase=name.split("_")[1]),
        bytes_flops, lower_bound, fallback, features=attention_features,
        monotone=ATTENTION_MONOTONE, size_columns=SIZE_COLUMNS, ideal=attention_ideal,
        derived_sizes=derived_sizes, preclip=preclip, proxy_shift=name == DECODE, grid=grid,
        **kw)


# held out: prefill by the chunk length, decode by the context length and also by whole
# per-GPU head layouts (a new model or TP degree; skipped where the data has one layout)
FAMILY_PREFILL = _family(PREFILL, PrefillGrid(), held_out_by=("num_tokens",))
FAMILY_DECODE = _family(DECODE, DecodeGrid(), held_out_by=("kv_len_max",),
                        also_held_out_by=(("num_heads", "num_kv_heads"),))
