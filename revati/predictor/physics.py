"""Physical lower bounds of op durations, and the sampled grid of ops the audit checks them on
(evaluate.audit predicts it through the served models).

No GPU op can finish faster than its roofline bound on its part: the bytes it must move at
the peak HBM bandwidth, and the FLOPs it must do at the peak dense tensor rate, both from the
device catalog (revati/catalog/gpus.toml; the A40's datasheet figures in roofline.EXTRA_GPUS).
The Predictor serves max(prediction, bound) and counts every clamp (`physics_clamps` in its
stats); a clamp is a bug of the prediction's source, reported so that it gets fixed there.

Bytes and FLOPs per family (each family's bytes_flops and lower_bound, families/<name>.py;
heads per GPU):
  gemm                 FLOPs 2·m·n·k·batch; bytes (m·k + k·n + m·n)·dtype bytes·batch
  attention_*          FLOPs 4·attn_pairs·num_heads·head_dim (QK^T and PV over the causal
                       (query, key) pairs); bytes 2·kv_len_sum·num_kv_heads·head_dim·kv bytes
                       (K and V of every key, read once) + 2·num_tokens·num_heads·head_dim·
                       dtype bytes (Q read, O written)
  norm ... embedding   the op's `bytes` (what the descriptor says it moves), less what the L2
                       can hold: max(0, bytes − L2 size) at the HBM bandwidth. NOTE: measured,
                       not assumed: Vidur's residual adds, rotaries and activations beat the
                       full-HBM figure by up to 1.25x (H100), 1.32x (A100) and 1.8x (A40)
                       exactly while the op fits in the L2 (H100 adds of 16-64 MB: 1135 of
                       1485 rows below bytes / 3.35 TB/s, up to 4.2 TB/s), and never once it is
                       bigger: the profiler reruns the op on the same tensors, and in serving a
                       small op's input is often the previous kernel's output, still in L2.
                       The weights of a GEMM and the KV cache of an attention call are read
                       once per step out of a working set far bigger than the L2 (every
                       layer's), and no GEMM or attention row of any profile beats the full
                       figure (the closest: H100 decode at 96% of it), so they keep it.
  collective           each rank receives at least (ranks − 1)/ranks of the message over its
                       link (a ring all_reduce moves 2(r − 1)/r, an in-switch NVLS one less;
                       for send_recv the descriptor does not say which way the bytes go, and
                       Vidur's A100 pairwise-NVLink send_recv moves 33 MB in 97 us, 343 GB/s,
                       above the 300 GB/s of one direction), at the catalog's per-direction
                       interconnect figure — also across nodes, where the real link is slower,
                       so the bound stays a bound — or the PCIe x16 theoretical rate for
                       topology pcie; and the message read and written once in HBM
  memcpy               h2d/d2h bytes at the PCIe x16 theoretical rate, d2d 2·bytes (read and
                       write) at the HBM bandwidth
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from revati.predictor.families import FAMILIES
from revati.predictor.roofline import PCIE_X16_GBPS, Peaks

__all__ = ["CLAMP_RTOL", "PCIE_X16_GBPS", "audit_ops", "below_bound", "bytes_flops",
           "lower_bound_us"]

# A prediction counts as below its bound when it is under bound · (1 − CLAMP_RTOL): float
# rounding of an exactly-at-bound value is not a clamp.
CLAMP_RTOL = 1e-9


def bytes_flops(family: str, keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes moved, FLOPs) of each key of one family (FLOPs 0 where an op does no math that
    the tensor peak bounds)."""
    if len(keys) == 0:
        return np.zeros(0), np.zeros(0)
    fam = FAMILIES.get(family)
    if fam is None:
        raise KeyError(f"no physical bound for family {family!r}")
    return fam.bytes_flops(keys)


def lower_bound_us(p: Peaks, family: str, keys: Sequence[tuple]) -> np.ndarray:
    """The physical lower bound (us) of each key of one family on GPU `p` (see the module
    docstring). Vectorised; an empty op (a GEMM with a zero dimension, 0 bytes) has bound 0."""
    if len(keys) == 0:
        return np.zeros(0)
    nbytes, flops = bytes_flops(family, keys)
    return FAMILIES[family].lower_bound(p, keys, nbytes, flops)


def below_bound(us: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Mask of predictions below their bound (beyond float rounding)."""
    return np.asarray(us) < np.asarray(bound) * (1.0 - CLAMP_RTOL)


# ---- the sampled audit grid ----

# Head layouts per GPU (query heads, KV heads, head dim) that vLLM sends: multi-head (MHA),
# grouped-query (GQA) and multi-query (MQA), head dims 64, 128 and 256; several are outside
# every shipped profile (40/8, 32/1, 128/8, the 64 and 256 head dims).
AUDIT_LAYOUTS: tuple[tuple[int, int, int], ...] = (
    (32, 32, 128), (32, 8, 128), (32, 1, 128), (40, 8, 128), (64, 8, 128), (8, 1, 128),
    (128, 8, 128), (16, 16, 64), (16, 4, 256),
)
AUDIT_DECODE_BATCH = (1, 4, 16, 64, 128, 256, 512)
AUDIT_DECODE_KEYS = (16, 128, 700, 2048, 8192, 32768, 131072)
AUDIT_PREFILL = ((16, 0), (128, 0), (512, 0), (1024, 0), (4096, 0), (16384, 0), (512, 4096),
                 (2048, 30000), (16, 32768), (256, 1024))
AUDIT_MOE_LAYOUTS = ((4096, 7168, 8, 8, 2), (2048, 768, 128, 128, 8), (2048, 1408, 32, 64, 6),
                     (5120, 8192, 16, 16, 1))
AUDIT_GEMM_M = (1, 16, 128, 512, 2048, 8192, 32768)
AUDIT_GEMM_NK = ((4096, 4096), (12288, 4096), (4096, 14336), (28672, 8192), (128256, 4096),
                 (1024, 5120), (6144, 1536))


def audit_ops() -> list[dict[str, Any]]:
    """The sampled audit grid, as op descriptors (the same on every GPU): decode and prefill
    attention over AUDIT_LAYOUTS, GEMMs (bf16 and fp8), the small ops, collectives (in a node
    and across two) and copies."""
    ops: list[dict[str, Any]] = []
    for h, kvh, hd in AUDIT_LAYOUTS:
        heads = {"num_heads": h, "num_kv_heads": kvh, "head_dim": hd}
        for b in AUDIT_DECODE_BATCH:
            for L in AUDIT_DECODE_KEYS:
                if b * L <= 1 << 23:  # KV caches that fit a GPU's memory at 8 KV heads
                    ops.append(dict(heads, op="attention", phase="decode", batch_size=b,
                                    kv_len_sum=b * L, kv_len_max=L))
        for q, ctx in AUDIT_PREFILL:
            for b in (1, 4):
                ops.append(dict(heads, op="attention", query_lens=[q] * b,
                                seq_lens=[q + ctx] * b))
    for n, k in AUDIT_GEMM_NK:
        for m in AUDIT_GEMM_M:
            for dt in ("bf16", "fp8"):
                ops.append({"op": "gemm", "m": m, "n": n, "k": k, "dtype": dt})
    for kind in ("norm", "activation", "rotary", "elementwise", "embedding"):
        for t in (1, 64, 1024, 16384, 131072):
            for hidden in (1024, 4096, 8192):
                ops.append({"op": kind, "tokens": t, "hidden": hidden})
    for b in (1 << 10, 1 << 16, 1 << 20, 1 << 24, 1 << 28, 1 << 31):
        for ranks, rpn in ((2, 2), (4, 4), (8, 8), (16, 8)):
            for kind in ("all_reduce", "all_gather", "send_recv"):
                ops.append({"op": "collective", "kind": kind, "bytes": b, "ranks": ranks,
                            "ranks_per_node": rpn})
        for d in ("h2d", "d2h", "d2d"):
            ops.append({"op": "memcpy", "bytes": b, "direction": d})
    # fused MoE (Mixtral, Qwen3-30B-A3B, DeepSeek-V2-Lite under EP 2, Llama-4-Scout) and MLA decode
    for h, i, e, et, k in AUDIT_MOE_LAYOUTS:
        for t in (1, 8, 64, 512, 4096):
            for stage in ("w13", "w2"):
                for dt in ("bf16", "fp8"):
                    ops.append({"op": "moe", "stage": stage, "tokens": t, "hidden": h,
                                "intermediate": i, "experts": e, "experts_total": et,
                                "topk": k, "dtype": dt})
    for heads in (16, 128):
        for b in AUDIT_DECODE_BATCH:
            for L in AUDIT_DECODE_KEYS:
                if b * L <= 1 << 23:
                    ops.append({"op": "mla", "batch_size": b, "kv_len_sum": b * L,
                                "num_heads": heads, "kv_lora_rank": 512, "rope_dim": 64})
    return ops
