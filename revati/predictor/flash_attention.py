"""An analytic model of vLLM's FlashAttention prefill kernel (FA3 on Hopper, FA2 elsewhere).

Why: the shipped prefill profiles time slower kernels than the one vLLM 0.32 runs (H100:
LLMServingSim, ~7% of dense BF16 peak at 2-4k tokens; A100: Vidur, ~13-19%; see
docs/predictor.md section 6). Where a GPU's data is demonstrably slower than this model
(`slow_kernel_ratio`, decisions in predictor.SLOW_PREFILL_DATA), the Predictor serves
min(data model, this model) and counts the keys where that departs from the data as the
fallback `fa_analytic`; L40S, which has no attention data at all, is
served by this model alone (also `fa_analytic`).

The model (per op, vectorised; everything per GPU after tensor parallelism):
  * Work is counted in 128 x 128 tiles of (query rows x keys) for one head, as the kernel walks
    them: every (sequence, head group) has T = ceil(rows / 128) query tiles, where rows = new
    tokens x heads packed per tile (FA3 packs the query heads of one KV head into a tile when
    the KV cache is paged, as vLLM's is; FA2 does not for prefill); tile j reads the keys up to
    its last query (the cached context plus its causal part). Each tile costs its key blocks
    plus a fixed per-tile overhead of `c` blocks (loading Q, the softmax epilogue, writing O),
    and a block runs at a fraction `e` of the dense tensor peak.
    throughput  = (sequences x head groups) x sum over tiles (keys/128 + c) x 4*128*128*head_dim
                  / (peak x e)
    critical    = the longest tile, (kv_len_max/128 / splits + 1) blocks, on one SM, where
                  splits = the split-KV factor when there are fewer tiles than SMs (FA's
                  num_splits heuristic, left on auto by vLLM): floor(SMs / tiles), at most one
                  per key block and 128 (the combine step is not modelled)
    compute     = max(throughput, critical, causal FLOPs / peak)   (never below the bound)
  * memory      = (K and V of every key once + Q read + O written) / (0.8 x HBM bandwidth)
  * time        = launch floor + max(compute, memory)
  The causal FLOPs are 4 x attn_pairs x num_heads x head_dim: attn_pairs counts the real
  (query, key) pairs (a chunk of q new tokens over c cached keys has q*c + q(q+1)/2 of them);
  GQA shares K/V reads, not FLOPs.

Where `e` and `c` come from: NOT from a measurement of ours. They are a least-squares fit of
the model to `FA_REFERENCE`, approximate throughputs read from the FlashAttention-2 and -3
papers' forward-pass benchmark figures (causal, head dim 128, 16 heads, batch x sequence =
16k tokens). We are not certain of those read-offs to better than ~10-15%; they are stated as
assumptions, in one table, so that a real profile of vLLM's kernel (`revati profile` on a
lent GPU, then retraining) replaces them: a GPU whose own prefill data is fast is served from
its data (the rule below), and this table is then no longer used for it.

Batches are summarised by the descriptor (batch_size, num_tokens, kv_len_sum, kv_len_max,
attn_pairs): the tile counts assume sequences of the mean length; the FLOPs bound uses the
exact pairs and the critical path the longest sequence.

Monotonicity: more new tokens over the same cached context, a longer cached context, more
sequences or more heads never predict faster (every term is non-decreasing in them; tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from revati.predictor.roofline import DTYPE_BYTES, MEMORY_EFFICIENCY, Peaks

BLOCK = 128  # query rows and keys per tile
FA_LAUNCH_US = 4.0  # launch + the minimum kernel time (roofline.LAUNCH_OVERHEAD_US)
MAX_SPLITS = 128  # FlashAttention's cap on split-KV splits
# The latency of one tile beyond its key blocks (load Q, finish the softmax, store O), in
# blocks. An assumption of the same standing as FA_REFERENCE; the fitted per-tile overhead `c`
# is a throughput figure (it also absorbs the causal imbalance and scheduling tails).
CRITICAL_OVERHEAD_BLOCKS = 1.0

# The reference each kernel's constants are fitted to.
#   fa3 (Hopper): MEASURED. The real H100 SXM prefill table of inference-sim (@ a410740f,
#     bench_data/mha/prefill/h100, a FlashAttention-class kernel; imported into
#     profiles/h100-sxm/attention_prefill.csv.gz with source "inference-sim", and a test checks
#     that these numbers are those rows): causal prefill of one fresh sequence, TP 1, bf16, six
#     head layouts "H-KVH-D" (query heads, KV heads, head dim), us by sequence length. Until
#     this table the constants were fitted to throughputs read off the FlashAttention-3 paper's
#     figures (200-620 TFLOP/s at 512-16k tokens), which put 32-32-128 at 4096 tokens at
#     266 us against the 217 us measured here.
#   fa2 (Ampere/Ada): ASSUMPTION (approximate, not measured by us): forward-pass throughput in
#     TFLOP/s of causal attention, head dim 128, 16 heads, batch = 16384 / seqlen, read off the
#     benchmark figures of the FlashAttention-2 paper (Dao 2023, A100 80GB SXM4, FP16/BF16),
#     uncertain to ~10-15% per point. Replace with a real profile of vLLM's kernel
#     (`revati profile`) when a GPU is available.
FA_REFERENCE: dict[str, dict] = {
    "fa3": {"gpu": "h100-sxm", "pack_gqa": True, "fit_launch": True,
            "source": "inference-sim H100 SXM prefill table (measured), causal, TP 1, bf16",
            "us": {
                "28-4-128": {1024: 37.737, 4096: 192.177, 8192: 662.37, 16384: 2562.16,
                             32768: 10791.9},
                "32-32-128": {1024: 38.755, 4096: 217.109, 8192: 761.923, 16384: 2972.66,
                              32768: 12448.9},
                "32-8-128": {1024: 38.098, 4096: 217.585, 8192: 760.382, 16384: 2882.16,
                             32768: 12339.2},
                "40-40-128": {1024: 43.121, 4096: 273.289, 8192: 974.523, 16384: 3977.3,
                              32768: 15781.6},
                "56-8-128": {1024: 47.535, 4096: 371.854, 8192: 1315.85, 16384: 5489.61,
                             32768: 21578.3},
                "64-8-128": {1024: 53.338, 4096: 428.777, 8192: 1538.32, 16384: 6400.0,
                             32768: 25001.6},
            }},
    "fa2": {"gpu_peak_tflops": 312.0, "pack_gqa": False, "fit_launch": False,
            "source": "FlashAttention-2 paper, A100 SXM4 forward, causal, hdim 128 (approx.)",
            "tflops": {512: 90.0, 1024: 120.0, 2048: 150.0, 4096: 165.0, 8192: 175.0,
                       16384: 180.0}},
}
# Which kernel vLLM 0.32 runs for prefill, by compute capability major: FA3 on Hopper (9.x),
# FA2 on Ampere/Ada (8.x).
FA_VERSION_BY_CC_MAJOR = {9: "fa3", 8: "fa2"}

# The rule: a GPU's prefill data measured a kernel slower than vLLM's if, on its measured rows
# with at least SLOW_RULE_MIN_COMPUTE_US of compute-bound time (so that the op does work beyond
# a tiny launch) and at least SLOW_RULE_MIN_ROWS of them, the median of measured / this model's
# time exceeds SLOW_RULE_RATIO (50% slower: well beyond the ~10-15% uncertainty of the
# reference figures).
SLOW_RULE_RATIO = 1.5
SLOW_RULE_MIN_COMPUTE_US = 1.0
SLOW_RULE_MIN_ROWS = 20


@dataclass(frozen=True)
class FaParams:
    version: str
    e: float  # fraction of the dense peak of a key block in the main loop
    c: float  # per-tile overhead, in key blocks
    pack_gqa: bool
    launch: float = FA_LAUNCH_US  # fixed cost of a call, us


def _tile_sums(q: np.ndarray, k: np.ndarray, pack: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per (sequence, head group): (query tiles T, sum over tiles of their keys / BLOCK).

    q, k: new tokens and keys (incl. the new tokens) of one sequence; pack: query heads per
    tile group (1 without GQA packing). Tile j covers queries up to min((j+1)*BLOCK/pack, q)
    and reads the cached keys plus those.
    """
    q = np.maximum(q, 1.0)
    ctx = np.maximum(k - q, 0.0)
    T = np.ceil(q * pack / BLOCK)
    s = BLOCK / pack  # queries per full tile
    keys = T * ctx + s * (T - 1.0) * T / 2.0 + q
    return T, keys / BLOCK


def _work(c: dict[str, np.ndarray], pack_gqa: bool) -> tuple[np.ndarray, np.ndarray]:
    """(key-block FLOPs, per-tile FLOPs) of each op in units of one 128 x 128 block's FLOPs
    times its head dim, summed over (sequence, head group): throughput = (a1 + c·a2) / e."""
    b = np.maximum(c["batch_size"], 1.0)
    heads, kvh = c["num_heads"], np.maximum(c["num_kv_heads"], 1.0)
    pack = np.maximum(heads / kvh, 1.0) if pack_gqa else np.ones_like(heads)
    T, kblocks = _tile_sums(c["num_tokens"] / b, c["kv_len_sum"] / b, pack)
    groups = b * heads / pack
    block_flops = 4.0 * BLOCK * BLOCK * c["head_dim"]
    return groups * kblocks * block_flops, groups * T * block_flops


def reference_rows(version: str) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """The calibration reference of a kernel as attention_prefill columns, times (us) and the
    peak (TFLOP/s) they ran at."""
    ref = FA_REFERENCE[version]
    if "us" in ref:  # measured rows: one fresh sequence per row
        lay, L, us = [], [], []
        for layout, by_len in ref["us"].items():
            h, kvh, hd = (int(x) for x in layout.split("-"))
            for n, t in sorted(by_len.items()):
                lay.append((h, kvh, hd))
                L.append(float(n))
                us.append(t)
        a = np.array(lay, dtype=np.float64)
        L_ = np.array(L)
        cols = {"batch_size": np.ones_like(L_), "num_tokens": L_, "kv_len_sum": L_,
                "kv_len_max": L_, "attn_pairs": L_ * (L_ + 1.0) / 2.0, "num_heads": a[:, 0],
                "num_kv_heads": a[:, 1], "head_dim": a[:, 2]}
        from revati.predictor.roofline import peaks

        return cols, np.array(us), peaks(ref["gpu"]).tflops["bf16"]
    # published throughputs: 16 heads of 128, batch x sequence = 16k tokens
    L_ = np.array(sorted(ref["tflops"]), dtype=np.float64)
    b = 16384.0 / L_
    sixteen = np.full_like(L_, 16.0)
    cols = {"batch_size": b, "num_tokens": b * L_, "kv_len_sum": b * L_, "kv_len_max": L_,
            "attn_pairs": b * L_ * (L_ + 1.0) / 2.0, "num_heads": sixteen,
            "num_kv_heads": sixteen, "head_dim": np.full_like(L_, 128.0)}
    flops = 4.0 * cols["attn_pairs"] * 16.0 * 128.0
    tflops = np.array([ref["tflops"][int(x)] for x in L_])
    return cols, flops / (tflops * 1e6), ref["gpu_peak_tflops"]


def calibrate(version: str, cols: dict[str, np.ndarray], us: np.ndarray,
              peak_tflops: float, fit_launch: bool) -> FaParams:
    """Least-squares fit (relative errors) of the throughput term to reference times:
    us = launch + (a1 + c·a2) / (e · peak), linear in (launch, 1/e, c/e); without fit_launch
    the reference is pure kernel time (a published throughput) and the launch is FA_LAUNCH_US,
    added at serving time."""
    pack = bool(FA_REFERENCE[version]["pack_gqa"])
    a1, a2 = _work(cols, pack)
    rate = peak_tflops * 1e6
    A = [a1 / rate, a2 / rate]
    if fit_launch:
        A = [np.ones_like(us)] + A
    M = np.column_stack(A) / us[:, None]
    sol, *_ = np.linalg.lstsq(M, np.ones_like(us), rcond=None)
    launch, u, v = (sol if fit_launch else (FA_LAUNCH_US, *sol))
    return FaParams(version, float(1.0 / u), float(max(v / u, 0.0)), pack, float(launch))


def _calibrate(version: str) -> FaParams:
    cols, us, peak = reference_rows(version)
    return calibrate(version, cols, us, peak, bool(FA_REFERENCE[version]["fit_launch"]))


def measured_on(version: str) -> str | None:
    """The GPU whose own measured rows a kernel's constants are fitted to (None: assumed)."""
    ref = FA_REFERENCE[version]
    return ref["gpu"] if "us" in ref else None


@cache
def fa_params(version: str) -> FaParams:
    return _calibrate(version)


def fa_version(p: Peaks) -> str:
    return _fa_version(p.key)


@cache
def _fa_version(gpu: str) -> str:
    from revati.catalog import get_gpu, load_catalog

    cc = get_gpu(gpu).cc_major if gpu in load_catalog() else 8
    return FA_VERSION_BY_CC_MAJOR.get(cc, "fa2")


def fa_prefill_us(p: Peaks, c: dict[str, np.ndarray], version: str | None = None,
                  params: FaParams | None = None) -> np.ndarray:
    """Predicted time (us) of vLLM's FlashAttention prefill on GPU `p` for attention key
    columns `c` (features.columns_from_keys of attention_prefill keys); `params` overrides the
    calibrated constants (evaluate() fits them on the training folds)."""
    prm = params or fa_params(version or fa_version(p))
    b = np.maximum(c["batch_size"], 1.0)
    heads, kvh, hd = c["num_heads"], np.maximum(c["num_kv_heads"], 1.0), c["head_dim"]
    ebytes = np.array([DTYPE_BYTES.get(d, 2) for d in c["dtype"]], dtype=np.float64)
    tf = np.array([p.tflops.get(d) or p.tflops["bf16"] for d in c["dtype"]], dtype=np.float64)
    ekv = np.array([DTYPE_BYTES.get(d, 0) if d != "auto" else 0 for d in c["kv_cache_dtype"]],
                   dtype=np.float64)
    ekv = np.where(ekv == 0, ebytes, ekv)
    pack = np.maximum(heads / kvh, 1.0) if prm.pack_gqa else np.ones_like(heads)
    T, kblocks = _tile_sums(c["num_tokens"] / b, c["kv_len_sum"] / b, pack)
    groups = b * heads / pack
    # Split-KV: with fewer tiles than SMs, the keys of a tile are split across CTAs (FA's
    # num_splits heuristic, which vLLM leaves on auto), at most one split per key block.
    nb_max = np.maximum(c["kv_len_max"] / BLOCK, 1.0)
    splits = np.minimum(np.maximum(np.floor(p.sm_count / np.maximum(groups * T, 1.0)), 1.0),
                        np.maximum(np.minimum(nb_max, MAX_SPLITS), 1.0))
    block_flops = 4.0 * BLOCK * BLOCK * hd
    rate = tf * 1e6  # FLOP per us
    thru = groups * (kblocks + prm.c * T) * block_flops / (rate * prm.e)
    critical = (nb_max / splits + CRITICAL_OVERHEAD_BLOCKS) * block_flops / (
        rate * prm.e / p.sm_count)
    bound = 4.0 * c["attn_pairs"] * heads * hd / rate
    compute = np.maximum(np.maximum(thru, critical), bound)
    nbytes = (2.0 * c["kv_len_sum"] * kvh * hd * ekv + 2.0 * c["num_tokens"] * heads * hd * ebytes)
    memory = nbytes / (MEMORY_EFFICIENCY * p.mem_bw_gbps * 1e3)
    return prm.launch + np.maximum(compute, memory)


def slow_kernel_ratio(gpu: str, rows: list[dict]) -> tuple[float, int]:
    """The rule's statistic on the measured prefill rows of `gpu`: (median of measured / this
    model's time over the rows whose compute-bound time is at least SLOW_RULE_MIN_COMPUTE_US,
    how many rows that is). The data measured a slower kernel than vLLM's if the median
    exceeds SLOW_RULE_RATIO on at least SLOW_RULE_MIN_ROWS rows (nan below that)."""
    from revati.predictor.features import SPECS, columns_from_keys, key_of_row
    from revati.predictor.roofline import peaks

    spec = SPECS["attention_prefill"]
    p = peaks(gpu)
    cols = columns_from_keys(spec, [key_of_row(spec, r) for r in rows])
    tf = np.array([p.tflops.get(d) or p.tflops["bf16"] for d in cols["dtype"]])
    comp = 4.0 * cols["attn_pairs"] * cols["num_heads"] * cols["head_dim"] / (tf * 1e6)
    keep = comp >= SLOW_RULE_MIN_COMPUTE_US
    n = int(keep.sum())
    if n < SLOW_RULE_MIN_ROWS:
        return float("nan"), n
    meas = np.array([r["dur_us_median"] for r in rows], dtype=np.float64)
    return float(np.median(meas[keep] / fa_prefill_us(p, cols)[keep])), n
