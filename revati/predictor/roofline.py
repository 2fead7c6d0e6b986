"""Roofline and bandwidth estimates of op durations.

Two uses:
  * as engineered features of the learned models (the ideal time of an op on a GPU tells a
    tree model most of what it needs; the model learns the efficiency on top);
  * as the fallback duration where no model or data covers a query (each family's
    `fallback`, families/<name>.py, derates these). Every such fallback is counted by the
    Predictor.

Peaks come from the device catalog (revati/catalog/gpus.toml, via revati.catalog.get_gpu).
GPUs that the emulator does not present but that have public profiles (the A40) get their
datasheet peaks from EXTRA_GPUS below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from revati.catalog import get_gpu, load_catalog

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
    "int8": 1, "auto": 2,
}

# NOTE: the fallback keeps a fixed per-launch overhead and derates the peaks, because a kernel
# never reaches the datasheet figure; the numbers are typical of cuBLAS / NCCL on these parts
# and documented in docs/predictor.md.
LAUNCH_OVERHEAD_US = 4.0
COMPUTE_EFFICIENCY = 0.7
MEMORY_EFFICIENCY = 0.8
COLLECTIVE_LATENCY_US = 10.0
MEMCPY_LATENCY_US = 5.0
INTER_NODE_GBPS = 25.0  # one 200 Gb/s InfiniBand NIC per GPU
PCIE_GBPS = {3: 12.0, 4: 25.0, 5: 50.0}  # pinned-memory copies, per direction
# Theoretical per-direction rate of a x16 link, GB/s (PCIe 3: 8 GT/s, 4: 16, 5: 32; 128b/130b):
# what the physical lower bounds use (physics.py).
PCIE_X16_GBPS = {3: 15.75, 4: 31.5, 5: 63.0}


@dataclass(frozen=True)
class Peaks:
    """The few numbers a roofline needs, per GPU."""

    key: str
    tflops: dict[str, float]  # by dtype
    mem_bw_gbps: float
    interconnect_gbps: float
    pcie_gen: int
    sm_count: int
    l2_bytes: int = 0


# Datasheet figures of GPUs with public profiles that are not in the device catalog.
EXTRA_GPUS: dict[str, Peaks] = {
    "a40": Peaks(
        key="a40",
        tflops={"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4, "fp8": 0.0},
        mem_bw_gbps=696.0, interconnect_gbps=56.0, pcie_gen=4, sm_count=84,
        l2_bytes=6 * 1024 * 1024,
    ),
}


@cache
def peaks(gpu: str) -> Peaks:
    """Returns the peak figures of a GPU key (catalog first, then EXTRA_GPUS)."""
    if gpu in EXTRA_GPUS:
        return EXTRA_GPUS[gpu]
    if gpu not in load_catalog():
        known = list(load_catalog()) + list(EXTRA_GPUS)
        raise KeyError(f"unknown GPU {gpu!r}; known: {', '.join(known)}")
    s = get_gpu(gpu)
    fp8 = s.peak_tflops_fp8 or s.peak_tflops_bf16
    return Peaks(
        key=gpu,
        tflops={"bf16": s.peak_tflops_bf16, "fp16": s.peak_tflops_bf16, "auto": s.peak_tflops_bf16,
                "tf32": s.peak_tflops_tf32, "fp32": s.peak_tflops_fp32, "fp8": fp8,
                "fp8_e4m3": fp8, "fp8_e5m2": fp8, "int8": fp8},
        mem_bw_gbps=s.mem_bw_gbps, interconnect_gbps=float(s.interconnect_gbps),
        pcie_gen=s.pcie_gen, sm_count=s.sm_count, l2_bytes=s.l2_bytes,
    )


def _tflops(p: Peaks, dtype: str) -> float:
    t = p.tflops.get(dtype) or p.tflops["bf16"]
    return t


def gemm_ideal_us(p: Peaks, m: float, n: float, k: float, dtype: str = "bf16",
                  batch: float = 1) -> tuple[float, float]:
    """Returns (compute-bound us, memory-bound us) of C[m,n] = A[m,k] B[k,n], `batch` times."""
    e = DTYPE_BYTES.get(dtype, 2)
    flops = 2.0 * m * n * k * batch
    nbytes = e * (m * k + k * n + m * n) * batch
    return flops / (_tflops(p, dtype) * 1e6), nbytes / (p.mem_bw_gbps * 1e3)


def attention_ideal_us(p: Peaks, num_tokens: float, kv_len_sum: float, attn_pairs: float,
                       num_heads: float, num_kv_heads: float, head_dim: float,
                       dtype: str = "bf16", kv_cache_dtype: str = "auto") -> tuple[float, float]:
    """Returns (compute-bound us, memory-bound us) of one attention call."""
    e = DTYPE_BYTES.get(dtype, 2)
    ekv = DTYPE_BYTES.get(kv_cache_dtype, e)
    flops = 4.0 * attn_pairs * num_heads * head_dim
    nbytes = 2.0 * kv_len_sum * num_kv_heads * head_dim * ekv + 2.0 * num_tokens * num_heads * head_dim * e
    return flops / (_tflops(p, dtype) * 1e6), nbytes / (p.mem_bw_gbps * 1e3)


def memory_ideal_us(p: Peaks, nbytes: float) -> float:
    """Time to stream `nbytes` through HBM at peak bandwidth."""
    return nbytes / (p.mem_bw_gbps * 1e3)


def collective_ideal_us(p: Peaks, kind: str, nbytes: float, ranks: int,
                        ranks_per_node: int | None = None, topology: str = "nvswitch") -> float:
    """Bandwidth term of a ring/bus collective (NCCL's 'bus bandwidth' model), no latency."""
    ranks = max(int(ranks), 1)
    rpn = ranks if not ranks_per_node else max(int(ranks_per_node), 1)
    if rpn < ranks:
        bw = INTER_NODE_GBPS
    elif topology == "pcie":
        bw = PCIE_GBPS.get(p.pcie_gen, 25.0)
    else:
        bw = p.interconnect_gbps
    if ranks == 1:
        factor = 0.0
    elif kind == "all_reduce":
        factor = 2.0 * (ranks - 1) / ranks
    elif kind in ("all_gather", "reduce_scatter"):
        factor = (ranks - 1) / ranks
    else:  # send_recv, broadcast
        factor = 1.0
    return factor * nbytes / (bw * 1e3)


def memcpy_us(p: Peaks, nbytes: float, direction: str) -> float:
    """The documented bandwidth model of memcpy (there is no public memcpy profile)."""
    if direction == "d2d":
        # A device-to-device copy reads and writes every byte.
        return 2.0 * nbytes / (MEMORY_EFFICIENCY * p.mem_bw_gbps * 1e3) + 2.0
    bw = PCIE_GBPS.get(p.pcie_gen, 25.0)
    return nbytes / (bw * 1e3) + MEMCPY_LATENCY_US
