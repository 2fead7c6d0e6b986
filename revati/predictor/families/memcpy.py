"""Copies: cudaMemcpy host-to-device, device-to-host and device-to-device.

Key (bytes, direction). There is no public memcpy profile, so the family is served by the
documented bandwidth model (roofline.memcpy_us, counted as `analytic`), not a learned one.
Physics: h2d/d2h bytes at the PCIe x16 theoretical rate, d2d 2·bytes (read and write) at the
HBM bandwidth.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor.families.base import BYTES_MAX, CHOICE, INT, Family, Field, floats, simple_op
from revati.predictor.roofline import PCIE_X16_GBPS, Peaks, memcpy_us

DIRECTIONS = ("h2d", "d2h", "d2d")


class MemcpyKey(NamedTuple):
    bytes: int
    direction: str


FIELDS = (
    Field("bytes", INT, maximum=BYTES_MAX),
    Field("direction", CHOICE, choices=DIRECTIONS),
)
OP = simple_op("memcpy", "memcpy", MemcpyKey, FIELDS)


def describe(key: tuple) -> dict:
    return {"op": "memcpy", **MemcpyKey(*key)._asdict()}


def analytic(p: Peaks, keys: Sequence[tuple]) -> np.ndarray:
    return np.array([memcpy_us(p, b, d) for b, d in keys])


def bytes_flops(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    nb = floats([k[0] for k in keys])
    return np.where(np.array([k[1] == "d2d" for k in keys]), 2.0 * nb, nb), np.zeros(len(keys))


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    link = PCIE_X16_GBPS.get(p.pcie_gen, 63.0) * 1e3
    d2d = np.array([k[1] == "d2d" for k in keys])
    return np.where(d2d, nbytes / (p.mem_bw_gbps * 1e3), nbytes / link)


def fallback(p: Peaks, f: dict) -> float:
    return memcpy_us(p, f["bytes"], f["direction"])


FAMILY = Family("memcpy", MemcpyKey, describe, bytes_flops, lower_bound, fallback,
                analytic=analytic)
