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

# ASSUMPTION (approximate, not measured by us): forward-pass throughput in TFLOP/s of causal
# attention, head dim 128, 16 heads, batch = 16384 / seqlen, read off the benchmark figures of
# the FlashAttention-2 paper (Dao 2023, A100 80GB SXM4, FP16/BF16) and the FlashAttention-3
# paper (Shah et al. 2024, H100 80GB SXM5, BF16). Uncertain to ~10-15% per point. Replace with a
# real profile of vLLM's kernel (`revati profile`) when a GPU is available.
FA_REFERENCE: dict[str, dict] = {
    "fa3": {"gpu_peak_tflops": 989.4, "pack_gqa": True,
            "source": "FlashAttention-3 paper, H100 SXM5 forward, causal, hdim 128 (approx.)",
            "tflops": {512: 200.0, 1024: 300.0, 2048: 440.0, 4096: 530.0, 8192: 600.0,
                       16384: 620.0}},
    "fa2": {"gpu_peak_tflops": 312.0, "pack_gqa": False,
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


def _calibrate(version: str) -> FaParams:
    """Least-squares fit of (1/e, c/e) to the reference throughputs (relative error)."""
    ref = FA_REFERENCE[version]
    L = np.array(sorted(ref["tflops"]), dtype=np.float64)
    eff = np.array([ref["tflops"][int(x)] for x in L]) / ref["gpu_peak_tflops"]
    T, blocks = _tile_sums(L, L, np.ones_like(L))
    real = L * (L + 1.0) / 2.0 / (BLOCK * BLOCK)  # real pairs in block units
    # 1/eff = blocks/real * (1/e) + T/real * (c/e); weight rows by eff for relative errors
    A = np.column_stack([blocks / real, T / real]) * eff[:, None]
    (u, v), *_ = np.linalg.lstsq(A, np.ones_like(L), rcond=None)
    return FaParams(version, 1.0 / u, v / u, bool(ref["pack_gqa"]))


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


def fa_prefill_us(p: Peaks, c: dict[str, np.ndarray], version: str | None = None
                  ) -> np.ndarray:
    """Predicted time (us) of vLLM's FlashAttention prefill on GPU `p` for attention key
    columns `c` (features.columns_from_keys of attention_prefill keys)."""
    prm = fa_params(version or fa_version(p))
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
    return FA_LAUNCH_US + np.maximum(compute, memory)


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
