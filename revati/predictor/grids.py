"""Bucketed lookup grids: the hot path of every learned family (Vidur's precomputed predictions).

A grid is the family's served prediction (the same model path the Predictor falls back to:
model, range clipping, proxies) evaluated once on fixed buckets of the op's size, per "shape"
(the part of the key that is not a size), then looked up with vectorised interpolation. No
LightGBM call happens on a grid hit.

Shapes and axes (each family's GridSpec, in families/<name>.py, says how its keys meet its
grids; this module builds, caches and looks them up. Sizes on log2 axes, values interpolated
linearly in log(us)):

  gemm               (n, k, dtype, batch) -> m        kept by the Predictor itself (M_BUCKETS,
                                                     isotonic, step lookup; see predictor.py)
  norm ... embedding (hidden, bytes/token, dtype) -> tokens   1 .. 2^20, the M bucket spacing;
                     bytes-only ops: (dtype) -> bytes          2^0 .. 2^40, 16 per octave
  collective         (kind, ranks, ranks_per_node, topology) -> bytes: a measured
                     configuration's own isotonic curve (its knots; exactly the curve lookup);
                     others 2^0 .. 2^40 bytes, 16 per octave, from the model
  attention_decode   (heads, kv heads, head dim, dtype, kv dtype) -> 3-D:
                     batch b (1..64, then 8 per octave to 4096) x mean keys per sequence
                     kv_len_sum / b (16 per octave, 1 .. 2^20) x skew kv_len_max / mean (12
                     points, 1 .. 256; capped at b); trilinear in log space (430k points, ~6 s
                     to build, so it is cached on disk). A running maximum along the length and
                     skew axes keeps it non-decreasing in them by construction. Batch is left
                     unconstrained, as in the model: the measured kernels are not monotone in
                     it (Vidur A100 decode at 1025 keys: 6 sequences 33 us, 7 sequences
                     24 us), and a running max along it cost A100 decode 3.90 -> 5.23% MAPE
  attention_prefill  five continuous sizes do not fit a dense grid: each size above 4096 is
                     rounded to the nearest 2^(1/128) bucket (<= 0.27%; smaller sizes and the
                     batch exact, as the model is a staircase in key blocks; rounding to a fixed
                     grid is non-decreasing, so monotonicity survives) and the model value of
                     the rounded op is memoised, so a bucket costs one (batched) model call, ever

Interpolation is not free: the attention models are staircases in the key count (FlashAttention
key blocks), and Vidur's A100 decode rows sit just past the steps (33, 65, 97 ... keys), so the
decode grid is ~2.5% off the raw model there (see docs/predictor.md section 6).

Outside the axes (e.g. decode batch > 4096, more than 2^20 keys per sequence) the op takes the
model path, counted as `model` in the stats. Fallback reasons of the grid points (extrapolated,
proxy_gpu, kernel_proxy, dtype_proxy) are kept per point and counted on every lookup that uses
them, as if the model had been called.

Decode grids are cached on disk under the model cache
(REVATI_MODEL_CACHE/<gpu>/grids/), keyed by a hash of the models' data + config hashes, the
grid version and the shape, so a sidecar start reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

# NOTE: the disk cache is keyed by the models' hashes, this version and code_hash() (the
# source of the modules that turn a model into a grid value), so a change of the model path
# cannot serve stale grids.
GRID_VERSION = 2
CODE_MODULES = ("features", "inference", "grids", "predictor", "flash_attention", "roofline",
                "families/base", "families/gemm", "families/attention", "families/small",
                "families/collective", "families/memcpy")

# Model path of one family, uncounted: keys -> (us, extrapolated mask, always-reasons).
ModelFn = Callable[[str, list[tuple]], tuple[np.ndarray, np.ndarray, list[str]]]


def _token_axis() -> np.ndarray:
    out: list[int] = list(range(1, 65))
    for lo, hi, step in ((64, 512, 8), (512, 2048, 32), (2048, 8192, 128), (8192, 32768, 512),
                         (32768, 131072, 2048), (131072, 1 << 20, 16384)):
        out.extend(range(lo + step, hi + 1, step))
    return np.log2(np.array(out, dtype=np.float64))


# The shared axes: grids on one of them are looked up together (FamilyGrids.lookup_family).
TOKEN_AXIS = _token_axis()
BYTES_AXIS = np.arange(0, 40 * 16 + 1) / 16.0


@dataclass
class Grid:
    """One shape's grid: axes (log2 sizes), log(us) values, per-point extrapolation flags."""

    axes: list[np.ndarray]
    logv: np.ndarray
    above: np.ndarray
    reasons: list[str] = field(default_factory=list)
    _any_above: bool | None = None

    def lookup(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x: (n, ndim) log2 coordinates. Returns (us, inside mask, extrapolated mask).

        NOTE: written for few numpy calls per lookup (a batch's keys of one shape are often a
        few hundred, where the per-call overhead of numpy, not the arithmetic, is the cost):
        the 2^ndim corners are gathered with one fancy index into the flattened grid.
        """
        n = x.shape[0]
        axes = self.axes
        nd = len(axes)
        if self._any_above is None:
            self._any_above = bool(self.above.any())
        if nd == 1:
            # NOTE: np.interp keeps a flat segment exactly flat (a weighted sum can wobble by
            # 1 ulp, which a strict monotonicity check sees)
            ax = axes[0]
            xd = x[:, 0]
            inside = (xd >= ax[0] - 1e-9) & (xd <= ax[-1] + 1e-9)
            val = np.interp(xd, ax, self.logv)
            if not self._any_above:
                return np.exp(val), inside, np.zeros(n, dtype=bool)
            i = np.minimum(np.maximum(np.searchsorted(ax, xd, side="right") - 1, 0),
                           len(ax) - 2)
            f = (xd - ax[i]) / (ax[i + 1] - ax[i])
            ext = self.above[i] | ((f > 0) & self.above[i + 1])
            return np.exp(val), inside, ext
        inside = np.ones(n, dtype=bool)
        shape = self.logv.shape
        base = np.zeros(n, dtype=np.int64)
        offs = np.zeros(1, dtype=np.int64)
        W = np.ones((n, 1))
        stride = 1
        for d in range(nd - 1, -1, -1):
            ax = axes[d]
            xd = x[:, d]
            inside &= (xd >= ax[0] - 1e-9) & (xd <= ax[-1] + 1e-9)
            # NOTE: np.minimum/np.maximum, not np.clip: np.clip's Python wrapper costs several
            # microseconds a call, more than the arithmetic on a few hundred keys
            i = np.minimum(np.maximum(np.searchsorted(ax, xd, side="right") - 1, 0),
                           len(ax) - 2)
            f = np.minimum(np.maximum((xd - ax[i]) / (ax[i + 1] - ax[i]), 0.0), 1.0)
            base += i * stride
            # corners: this dimension's bit is the slowest-varying so far
            offs = np.concatenate([offs, offs + stride])
            W = np.concatenate([W * (1.0 - f)[:, None], W * f[:, None]], axis=1)
            stride *= shape[d]
        idx = base[:, None] + offs[None, :]
        val = (W * self.logv.ravel()[idx]).sum(axis=1)
        if self._any_above:
            ext = ((W > 0) & self.above.ravel()[idx]).any(axis=1)
        else:
            ext = np.zeros(n, dtype=bool)
        return np.exp(val), inside, ext


def _mesh(axes: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [g.ravel() for g in np.meshgrid(*axes, indexing="ij")]


class FamilyGrids:
    """The grids of one Predictor (one GPU), built on first use of a shape.

    Args:
        model_fn: the Predictor's uncounted model path.
        cache_dir: where decode grids are persisted (None: memory only).
        cache_tag: hash of everything the grid values depend on besides the shape.
        curves: the collective model's measured curves.
        specs: the GridSpec of each family with grids (Family.grid, families/<name>.py).
    """

    def __init__(self, model_fn: ModelFn, cache_dir: Path | None, cache_tag: str,
                 curves: dict[str, list[list[float]]] | None = None,
                 specs: dict[str, "GridSpec"] | None = None) -> None:
        self.model_fn = model_fn
        self.specs = specs or {}
        self.cache_dir = cache_dir
        self.cache_tag = cache_tag
        self.curves = curves or {}
        self.grids: dict[tuple, Grid] = {}
        # memoised model values of rounded keys (attention prefill), and their reasons
        self.memo: dict[tuple, tuple[float, bool]] = {}
        self.memo_reasons: list[str] = []
        self.builds = 0
        self.model_ops = 0  # memoised ops whose bucket was new: they went through the model

    # ---- building ----

    def build(self, family: str, shape: tuple, axes: list[np.ndarray],
              keys_of: Callable[[list[np.ndarray]], list[tuple]],
              monotone_axes: Sequence[int] = ()) -> Grid:
        """The grid of one shape from the model on the mesh of `axes` (log2 sizes):
        keys_of(mesh coordinates) gives the keys; a running maximum along monotone_axes.
        Persisted on disk if the family's grid is `cached`."""
        path = None
        if self.cache_dir is not None and self.specs[family].cached:
            h = hashlib.sha256(json.dumps([self.cache_tag, GRID_VERSION, family, list(shape)],
                                          default=str).encode()).hexdigest()[:24]
            path = self.cache_dir / f"{family}-{h}.npz"
            if path.exists():
                try:
                    z = np.load(path)
                    g = Grid(axes, z["logv"], z["above"], json.loads(str(z["reasons"])))
                    self.grids[(family, shape)] = g
                    return g
                except (OSError, ValueError, KeyError):
                    pass
        coords = _mesh(axes)
        us, above, reasons = self.model_fn(family, keys_of(coords))
        shp = tuple(len(a) for a in axes)
        logv = np.log(np.maximum(np.asarray(us, dtype=np.float64), 1e-9)).reshape(shp)
        for d in monotone_axes:
            logv = np.maximum.accumulate(logv, axis=d)
        g = Grid(axes, logv, np.asarray(above, dtype=bool).reshape(shp), list(reasons))
        self.grids[(family, shape)] = g
        self.builds += 1
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez(tmp, logv=g.logv, above=g.above, reasons=json.dumps(g.reasons))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache only costs the rebuild
        return g

    # ---- lookup ----

    def lookup_family(self, family: str, keys: list[tuple]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
        """Grid values of keys of one family (through the family's GridSpec).

        Returns:
            (us, hit mask, extrapolated mask, other fallback reasons -> count). Keys that are
            not hits must take the model path.
        """
        return self.specs[family].lookup(self, family, keys)

    def lookup_dense(self, family: str, spec: "GridSpec", keys: list[tuple]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
        """lookup_family of a family whose grids are dense, one per shape (spec.coords,
        spec.build)."""
        n = len(keys)
        us = np.zeros(n)
        hit = np.zeros(n, dtype=bool)
        ext = np.zeros(n, dtype=bool)
        reasons: dict[str, int] = {}
        # NOTE: coordinates and validity for the whole batch with numpy; only the grouping
        # by shape (a dict of Python tuples) stays per key.
        valid, coords, shapes = spec.coords(keys)
        groups: dict[tuple, list[int]] = {}
        vidx = np.nonzero(valid)[0].tolist()
        if len(vidx) == n and len(set(shapes)) == 1:
            groups[shapes[0]] = vidx
        else:
            for i in vidx:
                sh = shapes[i]
                g = groups.get(sh)
                if g is None:
                    groups[sh] = [i]
                else:
                    g.append(i)
        shared: dict[int, list[tuple[list[int], Grid]]] = {}
        for shape, idx in groups.items():
            g = self.grids.get((family, shape))
            if g is None:
                g = spec.build(self, family, shape)
            if len(groups) > 1 and len(g.axes) == 1 and (g.axes[0] is TOKEN_AXIS or
                                                         g.axes[0] is BYTES_AXIS):
                shared.setdefault(id(g.axes[0]), []).append((idx, g))
                continue
            ii = np.asarray(idx)
            v, inside, e = g.lookup(coords[ii])
            us[ii] = v
            hit[ii] = inside
            ext[ii] = e & inside
            nh = int(inside.sum())
            for r in g.reasons:
                if nh:
                    reasons[r] = reasons.get(r, 0) + nh
        for items in shared.values():
            # NOTE: grids on one shared axis (token or byte buckets) are looked up together,
            # one row per shape of a stacked table, so a batch with many shapes (hidden sizes,
            # rank counts) costs a few numpy calls, not a few per shape
            ii = np.concatenate([np.asarray(idx) for idx, _ in items])
            gid = np.repeat(np.arange(len(items)), [len(idx) for idx, _ in items])
            L = np.stack([g.logv for _, g in items])
            A = np.stack([g.above for _, g in items])
            ax = items[0][1].axes[0]
            x = coords[ii, 0]
            inside = (x >= ax[0] - 1e-9) & (x <= ax[-1] + 1e-9)
            i = np.minimum(np.maximum(np.searchsorted(ax, x, side="right") - 1, 0), len(ax) - 2)
            f = np.minimum(np.maximum((x - ax[i]) / (ax[i + 1] - ax[i]), 0.0), 1.0)
            lo = L[gid, i]
            # lo + f * (hi - lo): exactly lo on a flat segment, as np.interp
            us[ii] = np.exp(lo + f * (L[gid, i + 1] - lo))
            e = A[gid, i] | ((f > 0) & A[gid, i + 1])
            hit[ii] = inside
            ext[ii] = e & inside
            nh = np.bincount(gid[inside], minlength=len(items))
            for (_, g), c in zip(items, nh.tolist()):
                for r in g.reasons:
                    if c:
                        reasons[r] = reasons.get(r, 0) + c
        return us, hit, ext, reasons


class GridSpec:
    """How one family's keys meet grids (each family module subclasses it).

    A dense family gives coords() and build(); a family looked up another way (attention
    prefill's memo) overrides lookup().
    """

    # persist this family's grids on disk (they are slow to build)
    cached = False

    def coords(self, keys: list[tuple]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        """(valid mask, (n, ndim) log2 coordinates, the shape of each key)."""
        raise NotImplementedError

    def build(self, fg: FamilyGrids, family: str, shape: tuple) -> Grid:
        """The grid of one shape (FamilyGrids.build does the work)."""
        raise NotImplementedError

    def lookup(self, fg: FamilyGrids, family: str, keys: list[tuple]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
        return fg.lookup_dense(family, self, keys)


def code_hash() -> str:
    """Hash of the source of CODE_MODULES (revati/predictor/<name>.py)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in CODE_MODULES:
        try:
            h.update((here / f"{name}.py").read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


def cache_tag(parts: Sequence[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
