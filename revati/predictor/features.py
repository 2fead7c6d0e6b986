"""Engineered features of each op family, vectorised over numpy columns.

Every family has a `FamilySpec`: its raw key columns (the schema's feature columns, in order),
a feature builder, the LightGBM monotone constraint of each feature, the "size" columns whose
training range is recorded (queries outside it are clipped and rescaled by the roofline, see
predictor.py), and the ideal-time function used for that rescaling.

NOTE: the models predict log(duration); every feature of a size is a non-decreasing function of
it and carries a +1 monotone constraint, so a prediction never decreases when an op grows
(a bigger GEMM is never faster). Features that are not monotone in size (wave efficiency, say)
are left out on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from revati.predictor.roofline import DTYPE_BYTES, Peaks
from revati.predictor.schema import FAMILY_COLUMNS

ATTENTION_FAMILIES = ("attention_prefill", "attention_decode")
SMALL_FAMILIES = ("norm", "activation", "rotary", "elementwise", "embedding")
COLLECTIVE_KINDS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv", "broadcast")
TOPOLOGIES = ("nvswitch", "pairwise_nvlink", "pcie")


def _log2(x: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(x, 1e-9))


def _dtype_arrays(p: Peaks, dtypes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    ebytes = np.array([DTYPE_BYTES.get(d, 2) for d in dtypes], dtype=np.float64)
    tflops = np.array([p.tflops.get(d) or p.tflops["bf16"] for d in dtypes], dtype=np.float64)
    return ebytes, tflops


def _num(cols: dict[str, Sequence], name: str) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in cols[name]], dtype=np.float64)


# ---- ideal times (us), vectorised: (compute, memory) ----

def gemm_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    eb, tf = _dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    comp = 2.0 * m * n * k * b / (tf * 1e6)
    mem = eb * (m * k + k * n + m * n) * b / (p.mem_bw_gbps * 1e3)
    return np.maximum(comp, mem)


def attention_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    eb, tf = _dtype_arrays(p, c["dtype"])
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


def small_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    return c["bytes"] / (p.mem_bw_gbps * 1e3)


def collective_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    from revati.predictor.roofline import collective_ideal_us

    return np.array([
        collective_ideal_us(p, kd, b, int(r), int(rpn), t)
        for kd, b, r, rpn, t in zip(c["kind"], c["bytes"], c["ranks"], c["ranks_per_node"],
                                    c["topology"])])


# ---- feature builders: (X, names) ----

GEMM_LAUNCH_US = 5.0
# CUTLASS/cuBLAS CTA tiles (rows x cols of C) whose wave quantisation is offered as features.
GEMM_TILES = ((64, 64), (128, 64), (128, 128), (128, 256), (256, 128))


def gemm_base(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    """What the GEMM model's residual target is relative to: compute + memory time + a launch
    constant. Smoother than max(compute, memory) across the memory/compute knee."""
    eb, tf = _dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    comp = 2.0 * m * n * k * b / (tf * 1e6)
    mem = eb * (m * k + k * n + m * n) * b / (p.mem_bw_gbps * 1e3)
    return comp + mem + GEMM_LAUNCH_US


def _pow2_part(x: np.ndarray) -> np.ndarray:
    """log2 of the largest power of two dividing x (capped at 13): the alignment of a dim."""
    xi = np.maximum(np.nan_to_num(x, nan=1.0), 1).astype(np.int64)
    return np.clip(np.log2((xi & -xi).astype(np.float64)), 0, 13)


def gemm_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    eb, tf = _dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    flops = 2.0 * m * n * k * b
    nbytes = eb * (m * k + k * n + m * n) * b
    tiles128 = np.ceil(m / 128.0) * np.ceil(n / 128.0) * b
    tiles64 = np.ceil(m / 64.0) * np.ceil(n / 64.0) * b
    waves = np.ceil(tiles128 / p.sm_count)
    cols = [
        _log2(m), _log2(n), _log2(k), _log2(b), _log2(flops), _log2(nbytes),
        _log2(flops / nbytes), _log2(gemm_ideal(p, c)), _log2(tiles128), _log2(tiles64),
        _log2(waves), _log2(np.minimum(m, 256.0)), eb,
    ]
    names = ["log_m", "log_n", "log_k", "log_batch", "log_flops", "log_bytes", "log_ai",
             "log_ideal", "log_tiles128", "log_tiles64", "log_waves", "log_m_small", "elt_bytes"]
    # Wave quantisation per tile hypothesis: waves, the fraction of the last wave's SMs that
    # work, and the padded compute time (waves x one tile's FLOPs at the per-SM peak).
    tf_sm = tf * 1e6 / p.sm_count
    for tm, tn in GEMM_TILES:
        tiles = np.ceil(m / tm) * np.ceil(n / tn) * b
        w = np.ceil(tiles / p.sm_count)
        cols += [_log2(w), tiles / (w * p.sm_count), _log2(w * tm * tn * k * 2.0 / tf_sm)]
        names += [f"log_waves_{tm}x{tn}", f"wave_eff_{tm}x{tn}", f"log_padded_{tm}x{tn}"]
    bw = p.mem_bw_gbps * 1e3
    cols += [_log2(eb * n * k * b / bw), _log2(eb * m * k * b / bw), _log2(eb * m * n * b / bw),
             _pow2_part(k), _pow2_part(n)]
    names += ["log_w_time", "log_a_time", "log_c_time", "k_pow2", "n_pow2"]
    return np.column_stack(cols), names


# NOTE: used only if gemm is trained on log time (not the default residual target); the
# quantisation/alignment features are not monotone in size and get 0.
GEMM_MONOTONE = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0] + [0] * 15 + [1, 1, 1, 0, 0]


def attention_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    eb, _ = _dtype_arrays(p, c["dtype"])
    b, q, kvm = c["batch_size"], c["num_tokens"], c["kv_len_max"]
    heads, kv_heads = c["num_heads"], c["num_kv_heads"]
    cols = [
        _log2(q), _log2(b), _log2(c["kv_len_sum"]),
        _log2(kvm), _log2(c["attn_pairs"]), heads, kv_heads,
        c["head_dim"], _log2(attention_ideal(p, c)),
        _log2(c["attn_pairs"] * heads * c["head_dim"]),
        _log2(c["kv_len_sum"] * kv_heads * c["head_dim"]), eb,
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
        cols += [_log2(nb), _log2(b * kv_heads * nb), _log2(waves * nb),
                 _log2(np.ceil(b * kv_heads / p.sm_count) * nb)]
        names += [f"log_kvb{blk}", f"log_seq_kvb{blk}", f"log_waves_kvb{blk}",
                  f"log_kvwaves_kvb{blk}"]
    cols += [_log2(b * kv_heads), _log2(ctas), _log2(waves), _log2(q_tiles)]
    names += ["log_seq_kvheads", "log_ctas", "log_waves", "log_q_tiles"]
    return np.column_stack(cols), names


ATTENTION_MONOTONE = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0] + [1] * 20


def small_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    cols = [_log2(c["bytes"]), np.where(np.isnan(c["tokens"]), np.nan, _log2(c["tokens"])),
            np.where(np.isnan(c["hidden"]), np.nan, _log2(c["hidden"])),
            _log2(small_ideal(p, c))]
    return np.column_stack(cols), ["log_bytes", "log_tokens", "log_hidden", "log_ideal"]


SMALL_MONOTONE = [1, 1, 1, 1]


def collective_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    kind = np.array([COLLECTIVE_KINDS.index(x) if x in COLLECTIVE_KINDS else -1
                     for x in c["kind"]], dtype=np.float64)
    topo = np.array([TOPOLOGIES.index(x) if x in TOPOLOGIES else -1 for x in c["topology"]],
                    dtype=np.float64)
    nodes = np.ceil(c["ranks"] / np.maximum(c["ranks_per_node"], 1))
    cols = [_log2(c["bytes"]), c["ranks"], nodes, kind, topo, _log2(collective_ideal(p, c) + 1e-3)]
    return np.column_stack(cols), ["log_bytes", "ranks", "nodes", "kind", "topology", "log_ideal"]


COLLECTIVE_MONOTONE = [1, 0, 0, 0, 0, 1]


@dataclass(frozen=True)
class FamilySpec:
    family: str
    columns: tuple[str, ...]
    string_columns: tuple[str, ...]
    build: Callable[[Peaks, dict[str, np.ndarray]], tuple[np.ndarray, list[str]]]
    monotone: list[int]
    size_columns: tuple[str, ...]
    ideal: Callable[[Peaks, dict[str, np.ndarray]], np.ndarray]
    # what a residual model's target is relative to: log(duration / base); default ideal
    base: Callable[[Peaks, dict[str, np.ndarray]], np.ndarray] | None = None

    def residual_base(self, p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
        return (self.base or self.ideal)(p, c)


def _spec(family: str) -> FamilySpec:
    cols = FAMILY_COLUMNS[family]
    if family == "gemm":
        return FamilySpec(family, cols, ("dtype",), gemm_features, GEMM_MONOTONE,
                          ("m", "n", "k", "batch"), gemm_ideal, gemm_base)
    if family in ATTENTION_FAMILIES:
        return FamilySpec(family, cols, ("dtype", "kv_cache_dtype"), attention_features,
                          ATTENTION_MONOTONE,
                          ("batch_size", "num_tokens", "kv_len_sum", "kv_len_max", "attn_pairs",
                           "num_heads", "num_kv_heads", "head_dim"), attention_ideal)
    if family in SMALL_FAMILIES:
        return FamilySpec(family, cols, ("dtype",), small_features, SMALL_MONOTONE,
                          ("bytes", "tokens", "hidden"), small_ideal)
    if family == "collective":
        return FamilySpec(family, cols, ("kind", "topology"), collective_features,
                          COLLECTIVE_MONOTONE, ("bytes",), collective_ideal)
    raise KeyError(f"no learned model for family {family!r}")


LEARNED_FAMILIES: tuple[str, ...] = ("gemm",) + ATTENTION_FAMILIES + SMALL_FAMILIES + ("collective",)
SPECS: dict[str, FamilySpec] = {f: _spec(f) for f in LEARNED_FAMILIES}


def columns_from_keys(spec: FamilySpec, keys: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Turns a list of key tuples (values in spec.columns order) into numpy columns."""
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(spec.columns):
        vals = [k[i] for k in keys]
        if name in spec.string_columns:
            out[name] = np.asarray(vals, dtype=object)
        else:
            out[name] = np.asarray([np.nan if v is None else v for v in vals], dtype=np.float64)
    return out


def key_of_row(spec: FamilySpec, row: dict) -> tuple:
    """The key tuple of a profile row (same layout the descriptor normaliser produces)."""
    return tuple(row[c] for c in spec.columns)
