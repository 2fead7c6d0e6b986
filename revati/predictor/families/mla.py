"""MLA decode attention (DeepSeek V2/V3-style multi-head latent attention, absorbed form).

Key (batch_size, kv_len_sum, num_heads, kv_lora_rank, rope_dim, kv_cache_dtype): the decode
sequences of the step, their keys summed, the query heads on this GPU, and the latent layout.
In the absorbed form every query head attends over one shared latent per key: kv_lora_rank
(the compressed K and V) plus rope_dim (the decoupled rotary key). So the cache holds
(kv_lora_rank + rope_dim) elements per key and layer, read once for all heads, where an MHA
cache holds 2 x heads x head_dim.

Physics: bytes = kv_len_sum x (kv_lora_rank + rope_dim) x kv bytes (the latents, read once)
+ batch_size x num_heads x (2 x kv_lora_rank + rope_dim) x 2 (q in, out written);
FLOPs = 2 x num_heads x kv_len_sum x (2 x kv_lora_rank + rope_dim) (QK^T over lora + rope,
then PV over lora).

The duration (analytic, counted as `analytic`: no public table of MLA decode times by shape
exists): one launch floor, plus the larger of the two times at the efficiencies FlashMLA's
authors published for its H800 SXM5 kernel (deepseek-ai/FlashMLA, README: "up to 3000 GB/s in
memory-bound configuration and 580 TFLOPS in computation-bound configuration"; the H800 has
the H100's 3.35 TB/s HBM3 and 989 dense BF16 TFLOPS): 3000 / 3350 = 0.90 of HBM bandwidth and
580 / 989 = 0.59 of the dense peak.

MLA prefill runs as ordinary attention on the up-projected heads (head dim qk_nope + rope for
QK, v_head_dim for V): the shim describes it to the attention_prefill family.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor.families.base import DTYPE, INT, Family, Field, floats, simple_op
from revati.predictor.roofline import DTYPE_BYTES, LAUNCH_OVERHEAD_US, Peaks

FLASHMLA_MEMORY_EFFICIENCY = 3000.0 / 3350.0
FLASHMLA_COMPUTE_EFFICIENCY = 580.0 / 989.0


class MlaKey(NamedTuple):
    batch_size: int
    kv_len_sum: int
    num_heads: int
    kv_lora_rank: int
    rope_dim: int
    kv_cache_dtype: str


FIELDS = (
    Field("batch_size", INT, minimum=1, doc="decode sequences"),
    Field("kv_len_sum", INT, minimum=1, doc="keys summed over the sequences"),
    Field("num_heads", INT, minimum=1, doc="query heads per GPU"),
    Field("kv_lora_rank", INT, minimum=1, doc="the latent's size (compressed K and V)"),
    Field("rope_dim", INT, 64, doc="the decoupled rotary key's size"),
    Field("kv_cache_dtype", DTYPE, "bf16"),
)
OP = simple_op("mla", "mla", MlaKey, FIELDS)


def describe(key: tuple) -> dict:
    return {"op": "mla", **MlaKey(*key)._asdict()}


def work(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes moved, FLOPs) of each key (the module docstring)."""
    if not keys:
        return np.zeros(0), np.zeros(0)
    b, kv, h, lora, rope = (floats([k[c] for k in keys]) for c in range(5))
    kvb = floats([2.0 if k[5] == "auto" else DTYPE_BYTES.get(k[5], 2) for k in keys])
    nbytes = kv * (lora + rope) * kvb + b * h * (2.0 * lora + rope) * 2.0
    flops = 2.0 * h * kv * (2.0 * lora + rope)
    return nbytes, flops


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    return np.maximum(nbytes / (p.mem_bw_gbps * 1e3), flops / (p.tflops["bf16"] * 1e6))


def analytic(p: Peaks, keys: Sequence[tuple]) -> np.ndarray:
    nbytes, flops = work(keys)
    mem = nbytes / (p.mem_bw_gbps * 1e3 * FLASHMLA_MEMORY_EFFICIENCY)
    comp = flops / (p.tflops["bf16"] * 1e6 * FLASHMLA_COMPUTE_EFFICIENCY)
    return LAUNCH_OVERHEAD_US + np.maximum(mem, comp)


def fallback(p: Peaks, f: dict) -> float:
    return float(analytic(p, [MlaKey(**f)])[0])


FAMILY = Family("mla", MlaKey, describe, work, lower_bound, fallback, analytic=analytic)
