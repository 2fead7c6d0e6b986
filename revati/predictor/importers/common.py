"""Helpers shared by the importers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

# Vidur and LLMServingSim name GPUs by family; these are the catalog keys they map to.
# NOTE: Vidur's A100 runs are A100 80GB SXM (DGX A100) and its H100 runs H100 80GB SXM (DGX H100).
GPU_KEYS = {"h100": "h100-sxm", "a100": "a100-80gb-sxm", "a40": "a40", "H100": "h100-sxm"}

VIDUR_COMMIT = "7d47513363ec447a741ac5e47241580b47724fbf"
VIDUR_LEGACY_COMMIT = "e2d00e9afba96cec9f0e7ea560bbfc4a539fae6a"
LLMSERVINGSIM_COMMIT = "5daddb21a545658d5150b535712d0494584b5278"

# Vidur profiles fp16 activations and weights; LLMServingSim does not record its dtype, and its
# GEMM times agree with Vidur's fp16 ones on the shared shapes, so both are 2-byte types.
VIDUR_DTYPE = "fp16"
LLMSERVINGSIM_DTYPE = "fp16"
ACT_BYTES = 2


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def ms_stats(row: dict[str, str], op: str) -> dict[str, float] | None:
    """Vidur time_stats.<op>.{min,max,mean,median,std} in ms -> us; None where empty."""
    out: dict[str, float] = {}
    for s in ("median", "mean", "min", "max", "std"):
        v = row.get(f"time_stats.{op}.{s}", "")
        if v in ("", None):
            if s == "median":
                return None
            continue
        out[s] = float(v) * 1000.0
    return out


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "yes")
