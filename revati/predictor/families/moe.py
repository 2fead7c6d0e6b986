"""Fused MoE: the grouped expert GEMMs of one MoE layer (gate-up "w13", then down "w2").

Key (tokens, hidden, intermediate, experts, experts_total, topk, stage, dtype): the step's
tokens, the model's hidden size, each expert's intermediate size on this GPU, the experts this
GPU holds and the model's routed experts in all (they differ under expert parallelism), the
experts each token is routed to, which GEMM, and the weights' dtype (activations alike).

Physics, per layer and GEMM, with routing assumed uniform (dummy weights give no real routing,
and trained routers are balanced by their auxiliary loss):
  token-expert pairs on this GPU   A = tokens x topk x experts / experts_total
  experts that get a token         n = experts x (1 - (1 - topk / experts_total) ^ tokens)
  w13: n x 2I x H weights read, A x H in and A x 2I out, 2 x A x H x 2I FLOPs
  w2:  n x I x H weights read,  A x I in and A x H out,  2 x A x I x H FLOPs
The lower bound is max(bytes / HBM bandwidth, FLOPs / dense peak of the dtype). At one token
and top-2 a Mixtral layer reads two experts; from ~16 tokens on, all eight: this is why a MoE
decode step costs nearly the whole model's weights at modest batch sizes.

The duration (no public fused-MoE profile exists, so the family is analytic, like memcpy, and
counted as `analytic`): one launch floor plus the larger of the two times at the efficiencies
that real H100 GEMMs of the same kind reach (Vidur's H100 profiles, mlp.csv of Llama-2-70B, the
gate-up and down projections, TP 1 and 2):
  MOE_MEMORY_EFFICIENCY  0.87: median of bytes / (3.35 TB/s x time) over the 44 rows of at
                         most 64 tokens (weight streaming; range 0.71-0.92)
  MOE_COMPUTE_EFFICIENCY 0.72: median of FLOPs / (989 TFLOPS x time) over the 536 rows of at
                         least 2048 tokens (range 0.62-0.87)
tests/predictor/test_moe.py recomputes both from the shared profiles. The grouped kernel pays
one launch, not one per expert (LAUNCH_OVERHEAD_US, roofline.py).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor.families.base import CHOICE, DTYPE, INT, Family, Field, From, floats, simple_op
from revati.predictor.roofline import DTYPE_BYTES, LAUNCH_OVERHEAD_US, Peaks

STAGES = ("w13", "w2")
MOE_MEMORY_EFFICIENCY = 0.87
MOE_COMPUTE_EFFICIENCY = 0.72
OUT_BYTES = 2  # the GEMMs write bf16


class MoeKey(NamedTuple):
    tokens: int
    hidden: int
    intermediate: int
    experts: int
    experts_total: int
    topk: int
    stage: str
    dtype: str


FIELDS = (
    Field("tokens", INT, doc="tokens of the step (the padded count the kernels run with)"),
    Field("hidden", INT, minimum=1, doc="the model's hidden size"),
    Field("intermediate", INT, minimum=1, doc="each expert's intermediate size on this GPU"),
    Field("experts", INT, minimum=1, doc="the routed experts this GPU holds"),
    Field("experts_total", INT, From("experts"), minimum=1,
          doc="the model's routed experts in all (default: experts; more under expert parallel)"),
    Field("topk", INT, minimum=1, doc="experts per token"),
    Field("stage", CHOICE, choices=STAGES, doc="w13 (gate-up GEMM) or w2 (down GEMM)"),
    Field("dtype", DTYPE, "bf16", doc="the expert weights' dtype"),
)
OP = simple_op("moe", "moe", MoeKey, FIELDS)


def describe(key: tuple) -> dict:
    return {"op": "moe", **MoeKey(*key)._asdict()}


def work(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes moved, FLOPs) of each key, with uniform routing (the module docstring)."""
    if not keys:
        return np.zeros(0), np.zeros(0)
    t, h, i, e, et, k = (floats([key[c] for key in keys]) for c in range(6))
    k = np.minimum(k, et)
    e = np.minimum(e, et)
    w13 = np.array([key[6] == "w13" for key in keys])
    eb = floats([DTYPE_BYTES.get(key[7], 2) for key in keys])
    pairs = t * k * e / et
    # NOTE: (1 - k/et)^t underflows to 0 for large t, as it should (every expert is busy)
    active = e * (1.0 - np.power(1.0 - k / et, t))
    n = np.where(w13, 2.0 * i, h)  # output features
    kdim = np.where(w13, h, i)     # reduction
    nbytes = active * n * kdim * eb + pairs * kdim * eb + pairs * n * OUT_BYTES
    flops = 2.0 * pairs * n * kdim
    return nbytes, flops


def _peak(p: Peaks, keys: Sequence[tuple]) -> np.ndarray:
    return floats([p.tflops.get(k[7]) or p.tflops["bf16"] for k in keys]) * 1e6  # FLOPs per us


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    return np.maximum(nbytes / (p.mem_bw_gbps * 1e3), flops / _peak(p, keys))


def analytic(p: Peaks, keys: Sequence[tuple]) -> np.ndarray:
    nbytes, flops = work(keys)
    mem = nbytes / (p.mem_bw_gbps * 1e3 * MOE_MEMORY_EFFICIENCY)
    comp = flops / (_peak(p, keys) * MOE_COMPUTE_EFFICIENCY)
    return LAUNCH_OVERHEAD_US + np.maximum(mem, comp)


def fallback(p: Peaks, f: dict) -> float:
    return float(analytic(p, [MoeKey(**f)])[0])


FAMILY = Family("moe", MoeKey, describe, work, lower_bound, fallback, analytic=analytic)
