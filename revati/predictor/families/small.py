"""The memory-bound per-token ops: norm, activation, rotary, elementwise, embedding.

Key (tokens, hidden, bytes, dtype): tokens x hidden elements in, `bytes` moved in total;
tokens and hidden may be None (a descriptor that gives only bytes). Without "bytes" the
descriptor's tokens x hidden x SMALL_BYTES_FACTOR x element size is the bytes.

Physics: the op's bytes, less what the L2 can hold: max(0, bytes - L2 size) at the HBM
bandwidth (see physics.py for why the L2).

Grid: per (hidden, bytes per token, dtype) a curve over the token count (TOKEN_AXIS); an op
given by bytes alone, per dtype over the bytes (BYTES_AXIS).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from revati.predictor import grids
from revati.predictor.families.base import (
    BYTES_MAX, DTYPE, INT, DescriptorError, Family, Field, Op, Part, Slow, floats, get_many, has_many,
    log2, read, read_many)
from revati.predictor.roofline import LAUNCH_OVERHEAD_US, MEMORY_EFFICIENCY, Peaks, memory_ideal_us

FAMILIES = ("norm", "activation", "rotary", "elementwise", "embedding")
# Bytes moved per (token x hidden) element when a small op gives no "bytes": norm reads and
# writes; silu_and_mul reads 2h and writes h; rotary rewrites q and k; add reads 2, writes 1.
SMALL_BYTES_FACTOR = {"norm": 2, "activation": 3, "rotary": 2, "elementwise": 3, "embedding": 1}
_SMALL_ELT = {"fp8": 1, "int8": 1, "fp32": 4, "tf32": 4}  # bytes per element, else 2


class SmallKey(NamedTuple):
    tokens: int | None
    hidden: int | None
    bytes: int
    dtype: str


FIELDS = (
    Field("dtype", DTYPE, "bf16"),
    Field("tokens", INT, None, doc="tokens (rows)"),
    Field("hidden", INT, None, doc="elements per token"),
    Field("bytes", INT, doc="bytes moved in total (default: from tokens and hidden)", maximum=BYTES_MAX),
)
F = {f.name: f for f in FIELDS}


def _op(kind: str) -> Op:
    factor = SMALL_BYTES_FACTOR[kind]

    def parse(op: dict) -> list[Part]:
        dtype = read(op, F["dtype"])
        tokens = read(op, F["tokens"])
        hidden = read(op, F["hidden"])
        if "bytes" in op:
            nbytes = read(op, F["bytes"])
        elif tokens is not None and hidden is not None:
            nbytes = factor * tokens * hidden * _SMALL_ELT.get(dtype, 2)
        else:
            raise DescriptorError(f"{kind}: give field 'bytes', or both 'tokens' and 'hidden'")
        return [(kind, tuple.__new__(SmallKey, (tokens, hidden, nbytes, dtype)))]

    def parse_batch(sub: list[dict]) -> list[list[Part]]:
        dtype = read_many(sub, F["dtype"])
        has_bytes = has_many(sub, "bytes")
        if all(has_bytes):
            nbytes = read_many(sub, F["bytes"])
            toks = get_many(sub, "tokens", None)
            hidden = get_many(sub, "hidden", None)
            if not set(map(type, toks)) <= {int, type(None)} or \
                    not set(map(type, hidden)) <= {int, type(None)} or \
                    min((t for t in toks + hidden if t is not None), default=0) < 0:
                raise Slow
        elif not any(has_bytes):
            toks = read_many(sub, F["tokens"], defaults=[...] * len(sub))
            hidden = read_many(sub, F["hidden"], defaults=[...] * len(sub))
            nbytes = [factor * t * h * _SMALL_ELT.get(d, 2)
                      for t, h, d in zip(toks, hidden, dtype)]
        else:
            raise Slow
        return [[(kind, k)] for k in map(tuple.__new__, [SmallKey] * len(sub),
                                         zip(toks, hidden, nbytes, dtype))]

    return Op(kind, FIELDS, parse, parse_batch, (kind,))


OPS = tuple(_op(k) for k in FAMILIES)


def _describe(kind: str):
    def describe(key: tuple) -> dict:
        k = SmallKey(*key)
        d = {"op": kind, "bytes": k.bytes, "dtype": k.dtype}
        if k.tokens is not None:
            d["tokens"] = k.tokens
        if k.hidden is not None:
            d["hidden"] = k.hidden
        return d
    return describe


# ---- ideal time, features ----

def small_ideal(p: Peaks, c: dict[str, np.ndarray]) -> np.ndarray:
    return c["bytes"] / (p.mem_bw_gbps * 1e3)


def small_features(p: Peaks, c: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    cols = [log2(c["bytes"]), np.where(np.isnan(c["tokens"]), np.nan, log2(c["tokens"])),
            np.where(np.isnan(c["hidden"]), np.nan, log2(c["hidden"])),
            log2(small_ideal(p, c))]
    return np.column_stack(cols), ["log_bytes", "log_tokens", "log_hidden", "log_ideal"]


SMALL_MONOTONE = [1, 1, 1, 1]


# ---- physics, fallback ----

def bytes_flops(keys: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    return floats([k[2] for k in keys]), np.zeros(len(keys))


def lower_bound(p: Peaks, keys: Sequence[tuple], nbytes: np.ndarray,
                flops: np.ndarray) -> np.ndarray:
    return np.maximum(nbytes - p.l2_bytes, 0.0) / (p.mem_bw_gbps * 1e3)


def fallback(p: Peaks, f: dict) -> float:
    return memory_ideal_us(p, f["bytes"]) / MEMORY_EFFICIENCY + LAUNCH_OVERHEAD_US


# ---- grid ----

class SmallGrid(grids.GridSpec):
    """(hidden, bytes per token, dtype) -> tokens, 1 .. 2^20 (TOKEN_AXIS); an op given by
    bytes alone (or whose bytes are not a whole number per token): (dtype) -> bytes,
    2^0 .. 2^40 (BYTES_AXIS)."""

    def coords(self, keys: list[tuple]):
        cols = list(zip(*keys))
        t = np.array(cols[0], dtype=np.float64)
        h = np.array(cols[1], dtype=np.float64)
        nb = np.array(cols[2], dtype=np.float64)
        ti = np.where(t == t, t, 0.0)  # None (nan) -> 0
        per_tok = (ti > 0) & (h > 0) & (nb > 0)
        per_tok &= np.mod(nb, np.where(per_tok, ti, 1.0)) == 0
        valid = per_tok | (nb >= 1)
        coords = np.log2(np.where(per_tok, np.maximum(ti, 1.0), np.maximum(nb, 1.0)))[:, None]
        shapes = [(hh, nbb // tt, d) if pt else (None, None, d) for tt, hh, nbb, d, pt in
                  zip(cols[0], cols[1], cols[2], cols[3], per_tok.tolist())]
        return valid, coords, shapes

    def build(self, fg: grids.FamilyGrids, family: str, shape: tuple) -> grids.Grid:
        hidden, bpt, dtype = shape
        if hidden is None:
            return fg.build(family, shape, [grids.BYTES_AXIS], lambda c: [
                (None, None, float(2.0 ** b), dtype) for b in c[0]])
        return fg.build(family, shape, [grids.TOKEN_AXIS], lambda c: [
            (float(t), hidden, float(t) * bpt, dtype) for t in np.rint(2.0 ** c[0])])


_GRID = SmallGrid()
FAMILY_OBJECTS = tuple(
    Family(k, SmallKey, _describe(k), bytes_flops, lower_bound, fallback,
           features=small_features, monotone=SMALL_MONOTONE,
           size_columns=("bytes", "tokens", "hidden"), ideal=small_ideal, bytes_only=True,
           grid=_GRID, held_out_by=("tokens",))
    for k in FAMILIES)
