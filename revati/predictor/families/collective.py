"""Collectives: NCCL all_reduce, all_gather, reduce_scatter, send_recv, broadcast.

Key (kind, bytes, ranks, ranks_per_node, topology): bytes is the message size per rank;
topology nvswitch | pairwise_nvlink | pcie; ranks_per_node defaults to min(ranks, 8).

Physics: each rank receives at least (ranks - 1)/ranks of the message over its link, at the
catalog's per-direction interconnect figure (or the PCIe x16 rate for topology pcie), and
the message is read and written once in HBM (see physics.py).

Measured: a row's undisturbed run (undisturbed_us: the fastest repeat), not its median.
Model: a measured configuration's own lower monotone envelope in log-log (collective_curves),
else the booster. Grid: per (kind, ranks, ranks_per_node, topology) over the bytes: a measured
configuration's curve knots (CurveGrid), others BYTES_AXIS from the model.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor import grids
from revati.predictor.families.base import BYTES_MAX, CHOICE, INT, Family, Field, From, floats, log2, simple_op
from revati.predictor.roofline import (
    COLLECTIVE_LATENCY_US, MEMORY_EFFICIENCY, PCIE_X16_GBPS, Peaks, collective_ideal_us)

COLLECTIVE_KINDS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv", "broadcast")
TOPOLOGIES = ("nvswitch", "pairwise_nvlink", "pcie")


class CollectiveKey(NamedTuple):
    kind: str
    bytes: int
    ranks: int
    ranks_per_node: int
    topology: str


# NOTE: read in this order (ranks first), so an op with several bad fields names the same one
FIELDS = (
    Field("ranks", INT, minimum=1, doc="ranks of the communicator"),
    Field("kind", CHOICE, choices=COLLECTIVE_KINDS),
    Field("bytes", INT, doc="message size per rank", maximum=BYTES_MAX),
    Field("ranks_per_node", INT, From("ranks", upto=8), minimum=1),
    Field("topology", CHOICE, "nvswitch", choices=TOPOLOGIES),
)
OP = simple_op("collective", "collective", CollectiveKey, FIELDS)


def describe(key: tuple) -> dict:
    return {"op": "collective", **CollectiveKey(*key)._asdict()}


# ---- ideal time, features ----

def collective_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([
        collective_ideal_us(p, kd, b, int(r), int(rpn), t)
        for kd, b, r, rpn, t in zip(c["kind"], c["bytes"], c["ranks"], c["ranks_per_node"],
                                    c["topology"])])


def collective_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    kind = np.array([COLLECTIVE_KINDS.index(x) if x in COLLECTIVE_KINDS else -1
                     for x in c["kind"]], dtype=np.float64)
    topo = np.array([TOPOLOGIES.index(x) if x in TOPOLOGIES else -1 for x in c["topology"]],
                    dtype=np.float64)
    nodes = np.ceil(c["ranks"] / np.maximum(c["ranks_per_node"], 1))
    cols = [log2(c["bytes"]), c["ranks"], nodes, kind, topo, log2(collective_ideal(p, c) + 1e-3)]
    return np.column_stack(cols), ["log_bytes", "ranks", "nodes", "kind", "topology", "log_ideal"]


COLLECTIVE_MONOTONE = [1, 0, 0, 0, 0, 1]


# ---- physics, fallback ----

def bytes_flops(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    return 2.0 * floats([k[1] for k in keys]), np.zeros(len(keys))


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    mem = nbytes / (p.mem_bw_gbps * 1e3)
    cols = list(zip(*keys))
    msg = floats(cols[1])
    ranks = np.maximum(floats(cols[2]), 1.0)
    frac = (ranks - 1.0) / ranks
    link = np.array([PCIE_X16_GBPS.get(p.pcie_gen, 63.0) if t == "pcie"
                     else p.interconnect_gbps for t in cols[4]], dtype=np.float64) * 1e3
    wire = frac * msg / np.maximum(link, 1e-9)
    # a single rank moves nothing
    return np.where(ranks > 1, np.maximum(wire, mem), 0.0)


def fallback(p: Peaks, f: dict) -> float:
    return collective_ideal_us(p, f["kind"], f["bytes"], f["ranks"], f["ranks_per_node"],
                               f["topology"]) / MEMORY_EFFICIENCY + COLLECTIVE_LATENCY_US


# ---- measured curves ----

def curve_key(kind: str, ranks: float, ranks_per_node: float, topology: str) -> str:
    return f"{kind}|{int(ranks)}|{int(ranks_per_node)}|{topology}"


def undisturbed_us(row: dict) -> float:
    """A collective's own duration in a profile row: the fastest of its repeated runs.

    What one rank times for a collective is its wait for the last rank to launch plus the
    transfer. The emulator models the wait itself (the Timekeeper ends a collective at the
    last arrival plus its duration, docs/timewarp.md), so the duration it needs is the
    transfer alone. Interference (a late peer, a host hiccup) only ever adds time, so the
    least of the repeats is its estimate. Vidur's small all-reduces show it: at 2 KB on an
    H100 pair every repeat took 28 us, at 18-60 KB every repeat 7 us; the repeats at one size
    split between about 7-13 us and 28-45 us, whatever the size, up to ~1 MB."""
    low = row.get("dur_us_min")
    return float(low) if low is not None and low > 0 else float(row["dur_us_median"])


def collective_curves(rows: Sequence[dict]) -> dict[str, list[list[float]]]:
    """Per collective configuration, the lower monotone envelope of its undisturbed times over
    the message size: at each measured size, the least undisturbed time measured at that size
    or any larger one (a bigger message never takes less time, and disturbances only add,
    so every larger measurement bounds a smaller one from above). The curve is non-decreasing
    by construction. Lookup interpolates it linearly in log-log space
    (inference.predict_keys)."""
    pts: dict[str, dict[float, float]] = {}
    for r in rows:
        k = curve_key(r["kind"], r["ranks"], r["ranks_per_node"], r["topology"])
        x, y = math.log(r["bytes"]), math.log(undisturbed_us(r))
        by_size = pts.setdefault(k, {})
        by_size[x] = min(y, by_size.get(x, math.inf))
    out: dict[str, list[list[float]]] = {}
    for k, by_size in sorted(pts.items()):
        ux = np.array(sorted(by_size))
        uy = np.array([by_size[x] for x in ux])
        fit = np.minimum.accumulate(uy[::-1])[::-1]
        out[k] = [[round(float(x), 6) for x in ux], [round(float(y), 6) for y in fit]]
    return out


# ---- grid ----

class CurveGrid(grids.Grid):
    """A measured configuration's curve as a grid: its knots are the axis; below the first
    knot the edge value (latency-bound), above the last a slope-1 extension in log-log
    (bandwidth-bound, flagged as extrapolated); every size is a hit."""

    def lookup(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v, inside, e = super().lookup(x)
        over = x[:, 0] > self.axes[0][-1]
        v = np.where(over, np.exp(self.logv[-1]) * 2.0 ** (x[:, 0] - self.axes[0][-1]), v)
        below = x[:, 0] < self.axes[0][0]
        v = np.where(below, np.exp(self.logv[0]), v)
        return v, np.ones(len(x), dtype=bool), e | over


class CollectiveGrid(grids.GridSpec):
    def coords(self, keys: list[tuple]):
        cols = list(zip(*keys))
        nbytes = np.array(cols[1], dtype=np.float64)
        valid = nbytes >= 1
        coords = np.log2(np.maximum(nbytes, 1.0))[:, None]
        return valid, coords, list(zip(cols[0], cols[2], cols[3], cols[4]))

    def build(self, fg: grids.FamilyGrids, family: str, shape: tuple) -> grids.Grid:
        kind, ranks, rpn, topo = shape
        ck = curve_key(kind, ranks, rpn, topo)
        if ck in fg.curves:
            # NOTE: the measured curve is already a lookup table: its knots are the axis
            lx, ly = fg.curves[ck]
            ax = np.asarray(lx) / math.log(2.0)
            if len(ax) == 1:
                ax = np.array([ax[0], ax[0] + 1e-6])
                ly = [ly[0], ly[0]]
            g = CurveGrid([ax], np.asarray(ly, dtype=np.float64),
                          np.zeros(len(ax), dtype=bool), [])
            fg.grids[(family, shape)] = g
            return g
        return fg.build(family, shape, [grids.BYTES_AXIS], lambda c: [
            (kind, float(2.0 ** b), ranks, rpn, topo) for b in c[0]])


FAMILY = Family(
    "collective", CollectiveKey, describe, bytes_flops, lower_bound, fallback,
    features=collective_features, monotone=COLLECTIVE_MONOTONE, size_columns=("bytes",),
    ideal=collective_ideal, grid=CollectiveGrid(), curves=collective_curves,
    held_out_by=("bytes",), measured=undisturbed_us)
