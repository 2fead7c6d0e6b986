"""GEMM: C[m, n] = A[m, k] @ B[k, n], repeated `batch` times (strided batched GEMM).

Key (m, n, k, dtype, batch). Physics: FLOPs 2·m·n·k·batch; bytes (m·k + k·n + m·n)·dtype
bytes·batch. The grid is the Predictor's own m-grid per weight shape (n, k, dtype, batch):
the model on M_BUCKETS, made non-decreasing by isotonic regression (monotone_grid), looked up
as a step (predictor.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from revati.predictor.families.base import (
    DTYPE, INT, Family, Field, dtype_arrays, elt, floats, log2, rate, simple_op)
from revati.predictor.roofline import (
    COMPUTE_EFFICIENCY, LAUNCH_OVERHEAD_US, MEMORY_EFFICIENCY, Peaks, gemm_ideal_us)


class GemmKey(NamedTuple):
    m: int
    n: int
    k: int
    dtype: str
    batch: int


FIELDS = (
    Field("m", INT, doc="rows of A and C (tokens)"),
    Field("n", INT, doc="columns of B and C"),
    Field("k", INT, doc="the reduction dimension"),
    Field("dtype", DTYPE, "bf16"),
    Field("batch", INT, 1, minimum=1, doc="strided-batched count"),
)
OP = simple_op("gemm", "gemm", GemmKey, FIELDS)


def describe(key: tuple) -> dict:
    return {"op": "gemm", **GemmKey(*key)._asdict()}


# ---- ideal times (us), vectorised ----

def gemm_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    eb, tf = dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    comp = 2.0 * m * n * k * b / (tf * 1e6)
    mem = eb * (m * k + k * n + m * n) * b / (p.mem_bw_gbps * 1e3)
    return np.maximum(comp, mem)


GEMM_LAUNCH_US = 5.0
# CUTLASS/cuBLAS CTA tiles (rows x cols of C) whose wave quantisation is offered as features.
GEMM_TILES = ((64, 64), (128, 64), (128, 128), (128, 256), (256, 128))


def gemm_base(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    """What the GEMM model's residual target is relative to: compute + memory time + a launch
    constant. Smoother than max(compute, memory) across the memory/compute knee."""
    eb, tf = dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    comp = 2.0 * m * n * k * b / (tf * 1e6)
    mem = eb * (m * k + k * n + m * n) * b / (p.mem_bw_gbps * 1e3)
    return comp + mem + GEMM_LAUNCH_US


# ---- features ----

def _pow2_part(x: np.ndarray) -> np.ndarray:
    """log2 of the largest power of two dividing x (capped at 13): the alignment of a dim."""
    xi = np.maximum(np.nan_to_num(x, nan=1.0), 1).astype(np.int64)
    return np.clip(np.log2((xi & -xi).astype(np.float64)), 0, 13)


def gemm_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    eb, tf = dtype_arrays(p, c["dtype"])
    m, n, k, b = c["m"], c["n"], c["k"], c["batch"]
    flops = 2.0 * m * n * k * b
    nbytes = eb * (m * k + k * n + m * n) * b
    tiles128 = np.ceil(m / 128.0) * np.ceil(n / 128.0) * b
    tiles64 = np.ceil(m / 64.0) * np.ceil(n / 64.0) * b
    waves = np.ceil(tiles128 / p.sm_count)
    cols = [
        log2(m), log2(n), log2(k), log2(b), log2(flops), log2(nbytes),
        log2(flops / nbytes), log2(gemm_ideal(p, c)), log2(tiles128), log2(tiles64),
        log2(waves), log2(np.minimum(m, 256.0)), eb,
    ]
    names = ["log_m", "log_n", "log_k", "log_batch", "log_flops", "log_bytes", "log_ai",
             "log_ideal", "log_tiles128", "log_tiles64", "log_waves", "log_m_small", "elt_bytes"]
    # Wave quantisation per tile hypothesis: waves, the fraction of the last wave's SMs that
    # work, and the padded compute time (waves x one tile's FLOPs at the per-SM peak).
    tf_sm = tf * 1e6 / p.sm_count
    for tm, tn in GEMM_TILES:
        tiles = np.ceil(m / tm) * np.ceil(n / tn) * b
        w = np.ceil(tiles / p.sm_count)
        cols += [log2(w), tiles / (w * p.sm_count), log2(w * tm * tn * k * 2.0 / tf_sm)]
        names += [f"log_waves_{tm}x{tn}", f"wave_eff_{tm}x{tn}", f"log_padded_{tm}x{tn}"]
    bw = p.mem_bw_gbps * 1e3
    cols += [log2(eb * n * k * b / bw), log2(eb * m * k * b / bw), log2(eb * m * n * b / bw),
             _pow2_part(k), _pow2_part(n)]
    names += ["log_w_time", "log_a_time", "log_c_time", "k_pow2", "n_pow2"]
    return np.column_stack(cols), names


# NOTE: used only if gemm is trained on log time (not the default residual target); the
# quantisation/alignment features are not monotone in size and get 0.
GEMM_MONOTONE = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0] + [0] * 15 + [1, 1, 1, 0, 0]


# ---- physics ----

def bytes_flops(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    cols = list(zip(*keys))
    m, nn, k, b = floats(cols[0]), floats(cols[1]), floats(cols[2]), floats(cols[4])
    e = elt(cols[3])
    live = (m > 0) & (nn > 0) & (k > 0)  # an empty GEMM moves nothing
    return np.where(live, e * (m * k + k * nn + m * nn) * b, 0.0), 2.0 * m * nn * k * b


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    mem = nbytes / (p.mem_bw_gbps * 1e3)
    return np.maximum(mem, flops / rate(p, [k[3] for k in keys]))


def fallback(p: Peaks, f: dict) -> float:
    c, m = gemm_ideal_us(p, f["m"], f["n"], f["k"], f["dtype"], f["batch"])
    return max(c / COMPUTE_EFFICIENCY, m / MEMORY_EFFICIENCY) + LAUNCH_OVERHEAD_US


# ---- the m-grid ----

def _buckets() -> np.ndarray:
    out: list[int] = list(range(1, 65))
    for lo, hi, step in ((64, 512, 8), (512, 2048, 32), (2048, 8192, 128), (8192, 32768, 512),
                         (32768, 131072, 2048)):
        out.extend(range(lo + step, hi + 1, step))
    return np.array(out, dtype=np.float64)


M_BUCKETS = _buckets()
M_BUCKET_LIST = M_BUCKETS.tolist()


def monotone_grid(us: np.ndarray) -> np.ndarray:
    """The closest non-decreasing curve to the model's values on the m buckets: isotonic
    regression (pool adjacent violators) of log(us). Unlike a running max, a single high
    prediction does not lift every larger m."""
    from scipy.optimize import isotonic_regression

    return np.exp(isotonic_regression(np.log(np.maximum(us, 1e-9))).x)


def grid_keys(keys: Sequence[tuple]) -> list[list[Any]]:
    """The weight shapes (n, k, dtype, batch) of training keys, whose m-grids are built at
    load."""
    return [list(g) for g in sorted({(int(k[1]), int(k[2]), k[3], int(k[4])) for k in keys})]


FAMILY = Family(
    "gemm", GemmKey, describe, bytes_flops, lower_bound, fallback,
    features=gemm_features, monotone=GEMM_MONOTONE, size_columns=("m", "n", "k", "batch"),
    ideal=gemm_ideal, base=gemm_base, grid_keys=grid_keys,
    # the weight shape: every token count of a held-out (n, k) is unseen; also whole
    # (m, n, k), so no test GEMM was trained on, not even its repeat in another model's file
    held_out_by=("n", "k"), also_held_out_by=(("m", "n", "k"),))
