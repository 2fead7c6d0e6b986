"""The run-time Predictor: op descriptors in, microseconds out.

Lookup order for one op part (family, key), a whole batch at a time (predict_parts):
  1. the exact-key cache (a dict; the shim caches too, so the sidecar mostly sees misses),
     bounded: past CACHE_MAX_ENTRIES the oldest quarter is dropped (insertion order), counted
     as cache_evictions, so a long run with ever-new keys cannot grow the sidecar without end;
  2. the bucketed grid of the family: for GEMMs the m-grid of the op's weight shape
     (n, k, dtype, batch), the model evaluated once on M_BUCKETS, made non-decreasing by
     isotonic regression in log space (monotone_grid) and looked up as a step (the first
     bucket >= m); grids of the trained shapes are built at load, a new shape's on its first
     query. NOTE: the isotonic fit is what guarantees that a GEMM with more rows is never
     predicted faster, for any weight shape. Other families: grids.FamilyGrids;
  3. the family model, batched, with out-of-range sizes clipped and rescaled by the roofline
     (counted as "extrapolated");
  4. fallbacks, each counted by family and reason:
       proxy_gpu     no model for this GPU; the proxy GPU's model scaled by the roofline ratio
       dtype_proxy   a GEMM/small-op dtype the model was not trained on; scaled by roofline
       roofline      no model at all: the family's roofline fallback (Family.fallback)
       analytic      memcpy: the documented bandwidth model (there is no public profile)
       kernel_proxy  a family whose data on this GPU timed another kernel than vLLM's: another
                     GPU's model of that family (KERNEL_PROXY), scaled by the roofline
       fa_analytic   attention prefill from the analytic FlashAttention model
                     (flash_attention.py): where the prefill data of this GPU measured a
                     slower kernel than vLLM's (SLOW_PREFILL_DATA, decided by
                     flash_attention.slow_kernel_ratio), the served time is
                     min(data model, FA model), counted where it departs from the data; a
                     GPU with no prefill data at all (L40S), or whose FA constants are fitted
                     to its own measured prefill rows (h100-sxm, and h200 through it), is
                     served by the FA model alone
  5. the physics guard, on every value of 2-4 before it is cached: max(value, the op's
     physical lower bound, physics.lower_bound_us), each raised value counted per family
     (`physics_clamps`); a clamp is a bug of its source, not a feature of the model
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from revati.predictor import paths
from revati.predictor.descriptor import normalize_batch
from revati.predictor.families import FAMILIES
from revati.predictor.families.attention import decode_step
from revati.predictor.families.gemm import M_BUCKET_LIST, M_BUCKETS, monotone_grid
from revati.predictor.flash_attention import FaParams, fa_prefill_us, fa_version, measured_on
from revati.predictor.grids import FamilyGrids, cache_tag, code_hash
from revati.predictor.inference import predict_keys
from revati.predictor.physics import below_bound, lower_bound_us
from revati.predictor.roofline import Peaks, peaks
from revati.predictor.training import FittedModel, load_models, train_gpu

# GPUs without profiles borrow the models of a similar part, scaled by the roofline ratio.
PROXY_GPUS = {"h200": "h100-sxm", "l40s": "a40", "a100-40gb": "a100-80gb-sxm"}
# Dtypes that share the model of the 2-byte types the public profiles were measured in.
HALF_DTYPES = ("fp16", "bf16", "auto")
# Families whose profile on a GPU measured another kernel than the one vLLM runs there: they
# are served from the named GPU's model of that family, scaled by the roofline ratio, and
# counted as `kernel_proxy`. Empty since the real H100 decode table (inference-sim, a split-KV
# FlashAttention-class kernel) replaced the A100-scaled proxy that h100-sxm and h200 decode
# used while the only H100 decode data was LLMServingSim's non-split kernel (one CTA per
# sequence and KV head: one 65536-key sequence 1747 us, 1.1% of HBM bandwidth; stored, not
# trained on, training.DEFAULT_EXCLUDE). See docs/predictor.md section 6.
KERNEL_PROXY: dict[str, dict[str, str]] = {}
# GPUs whose attention-prefill profile measured a kernel demonstrably slower than vLLM's
# FlashAttention, by the rule of flash_attention.slow_kernel_ratio (median measured / FA model
# over the rows with >= 1 us of compute-bound time, above SLOW_RULE_RATIO = 1.5), with the
# statistic on the shipped data. tests/predictor re-derive it from the data, so new profiles
# that flip the rule fail there until this table is updated. (h100-sxm left it when its
# prefill data became the inference-sim table, which the FA3 constants are fitted to.)
SLOW_PREFILL_DATA: dict[str, float] = {
    "a100-80gb-sxm": 1.86,  # Vidur: 4096 fresh tokens 2314 us, 19% of peak (FA2 ~50%)
}
# NOTE: ~250 bytes per entry (the key tuple and a float), so the cap is ~65 MB; a vLLM run
# has a few thousand distinct op keys, a sweep over many batch compositions far more.
CACHE_MAX_ENTRIES = 1 << 18
# The families with bucketed grids (grids.FamilyGrids); the GEMM m-grid is the Predictor's own.
GRID_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.grid is not None)


class PredictorStats:
    """Counters of how predictions were made (what STATS and the report show)."""

    def __init__(self) -> None:
        self.ops = 0
        self.cache_hits = 0
        self.cache_evictions = 0
        self.grid_hits = 0
        self.grid_builds = 0
        self.model = 0
        self.fallbacks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.by_family: dict[str, int] = defaultdict(int)
        # the physics guard: per family, predictions that came out below the op's physical
        # lower bound and were raised to it, and the lowest raw / bound ratio seen
        self.clamps: dict[str, int] = defaultdict(int)
        self.clamp_worst: dict[str, float] = {}

    def clamp(self, family: str, n: int, worst: float) -> None:
        self.clamps[family] += n
        self.clamp_worst[family] = min(self.clamp_worst.get(family, 1.0), worst)

    def fallback(self, family: str, reason: str, n: int = 1) -> None:
        self.fallbacks[family][reason] += n

    def as_dict(self) -> dict[str, Any]:
        nfb = sum(sum(v.values()) for v in self.fallbacks.values())
        return {"ops": self.ops, "cache_hits": self.cache_hits,
                "cache_evictions": self.cache_evictions, "grid_hits": self.grid_hits,
                "grid_builds": self.grid_builds,
                "model": self.model, "fallbacks_total": nfb,
                "fallbacks": {f: dict(v) for f, v in self.fallbacks.items()},
                "by_family": dict(self.by_family),
                "physics_clamps": dict(self.clamps),
                "physics_clamp_worst": dict(self.clamp_worst),
                "hit_rate": (self.cache_hits + self.grid_hits) / self.ops if self.ops else 0.0}


class Predictor:
    """Predicts op durations (us) on one GPU from the shipped or cached family models."""

    def __init__(self, gpu: str, models: dict[str, FittedModel],
                 proxy_models: dict[str, FittedModel] | None = None,
                 proxy_gpu: str | None = None, build_grids: bool = True,
                 kernel_proxy_models: dict[str, tuple[FittedModel, str]] | None = None,
                 family_grids: bool = True, grid_cache: bool = True,
                 fa_prefill: bool = True, cache_max: int = CACHE_MAX_ENTRIES,
                 physics_guard: bool = True, fa_params: FaParams | None = None) -> None:
        self.gpu = gpu
        # False only to study the raw sources (the guard is what is served)
        self.physics_guard = physics_guard
        if cache_max < 1:
            raise ValueError(f"cache_max must be >= 1, got {cache_max}")
        self.cache_max = cache_max
        self.peaks: Peaks = peaks(gpu)
        self.models = models
        self.proxy_models = proxy_models or {}
        self.proxy_gpu = proxy_gpu
        self.proxy_peaks = peaks(proxy_gpu) if proxy_gpu else None
        self.stats = PredictorStats()
        self._cache: dict[tuple[str, tuple], float] = {}
        self._grids: dict[tuple, list[float]] = {}
        self._grid_arrays: dict[tuple, np.ndarray] = {}
        self.kernel_proxy_models = kernel_proxy_models or {}
        # "min": min(data, FA model); "only": the FA model (no prefill data, or the FA model's
        # constants are fitted to this GPU's own measured prefill rows); None: the data
        self.fa_params = fa_params
        self.fa_prefill: str | None = None
        if fa_prefill:
            pm = self._family_model("attention_prefill")[0]
            if pm is None or pm.gpu == measured_on(fa_version(self.peaks)):
                # NOTE: a table of whole fresh sequences (the inference-sim H100 rows) cannot
                # train a model of chunks over cached keys or of batches; the FA model fitted
                # to it carries the measured efficiency to those by the kernel's tiling
                self.fa_prefill = "only"
            elif pm.gpu in SLOW_PREFILL_DATA:
                self.fa_prefill = "min"
        self.family_grids: FamilyGrids | None = None
        if family_grids:
            used = [self._family_model(f)[0] for f in GRID_FAMILIES]
            hashes = [f"{m.family}:{m.gpu}:{m.data_hash}:{m.config_hash}" for m in used if m]
            cacheable = grid_cache and all(m.data_hash for m in used if m)
            coll = self._family_model("collective")[0]
            self.family_grids = FamilyGrids(
                self._model_family,
                paths.model_cache_root() / gpu / "grids" if cacheable else None,
                cache_tag([gpu] + hashes + [code_hash()]),
                coll.curves if coll is not None else {},
                {f: FAMILIES[f].grid for f in GRID_FAMILIES})
        if build_grids:
            gm = self.models.get("gemm") or self.proxy_models.get("gemm")
            if gm is not None:
                self._build_grids([tuple(k) for k in gm.grid_keys])

    # ---- construction ----

    @classmethod
    def load(cls, gpu: str, models_dir: str | Path | None = None, train_if_missing: bool = False,
             build_grids: bool = True, fa_prefill: bool = True,
             cache_max: int = CACHE_MAX_ENTRIES) -> "Predictor":
        """Loads the models of `gpu`.

        Args:
            gpu: GPU key (catalog key, or a40).
            models_dir: a directory with manifest.json (default: profiles/models/<gpu>/).
            train_if_missing: train from profiles/<gpu>/ (cached by hash) if nothing is shipped.
            build_grids: precompute the GEMM m-grids of the trained shapes.
            fa_prefill: serve attention prefill with the FlashAttention model where the data
                measured a slower kernel (False: the data model alone, as evaluate() scores).
            cache_max: entries of the exact-key cache before the oldest are dropped.
        """
        peaks(gpu)  # unknown GPU -> KeyError listing the known ones
        mdir = Path(models_dir) if models_dir else paths.shipped_models_root() / gpu
        models = load_models(mdir, gpu)
        if not models and train_if_missing:
            models = train_gpu(gpu)
        proxy_gpu = PROXY_GPUS.get(gpu)
        proxy: dict[str, FittedModel] = {}
        if proxy_gpu:
            proxy = {f: m for f, m in load_models(paths.shipped_models_root() / proxy_gpu,
                                                  proxy_gpu).items() if f not in models}
        kproxy: dict[str, tuple[FittedModel, str]] = {}
        for family, src in KERNEL_PROXY.get(gpu, {}).items():
            m = load_models(paths.shipped_models_root() / src, src).get(family)
            if m is not None:
                kproxy[family] = (m, src)
        return cls(gpu, models, proxy, proxy_gpu if proxy else None, build_grids, kproxy,
                   fa_prefill=fa_prefill, cache_max=cache_max)

    def info(self) -> dict[str, Any]:
        """Model facts for the HELLO reply and `revati predictor info`."""
        return {"gpu": self.gpu, "families": sorted(self.models),
                "proxy_gpu": self.proxy_gpu, "proxy_families": sorted(self.proxy_models),
                "kernel_proxy": {f: g for f, (_, g) in self.kernel_proxy_models.items()},
                "fa_prefill": self.fa_prefill,
                "rows": {f: m.rows for f, m in self.models.items()},
                "data_hash": {f: m.data_hash[:12] for f, m in self.models.items()}}

    # ---- the GEMM grid ----

    def _gemm_model(self) -> tuple[FittedModel | None, Peaks, float]:
        m = self.models.get("gemm")
        if m is not None:
            return m, self.peaks, 1.0
        m = self.proxy_models.get("gemm")
        if m is not None:
            return m, self.proxy_peaks, 0.0  # 0.0: scale per key below
        return None, self.peaks, 1.0

    def _build_grids(self, shapes: list[tuple]) -> None:
        model, p, _ = self._gemm_model()
        if model is None or not shapes:
            return
        keys = [(m, n, k, d, b) for (n, k, d, b) in shapes for m in M_BUCKET_LIST]
        us = self._model_gemm(keys, count=False)
        nb = len(M_BUCKET_LIST)
        for i, shape in enumerate(shapes):
            g = monotone_grid(us[i * nb:(i + 1) * nb])
            self._grids[shape] = g.tolist()
            self._grid_arrays[shape] = g

    def _model_gemm(self, keys: list[tuple], count: bool = True) -> np.ndarray:
        """GEMM durations from the model path, with dtype/proxy scaling."""
        model, p, direct = self._gemm_model()
        trained = {g[2] for g in model.grid_keys} or {"fp16"}
        base_dtype = next(iter(trained))
        mkeys = []
        dproxy = np.zeros(len(keys), dtype=bool)
        for i, (m, n, k, d, b) in enumerate(keys):
            if d in HALF_DTYPES or d in trained:
                d2 = base_dtype if d in HALF_DTYPES and base_dtype in HALF_DTYPES else d
            else:
                d2, dproxy[i] = base_dtype, True
            mkeys.append((m, n, k, d2, b))
        us, above = predict_keys(model, p, mkeys)
        spec = FAMILIES["gemm"]
        if dproxy.any() or not direct:
            tgt = spec.residual_base(self.peaks, spec.columns_of(keys))
            src = spec.residual_base(p, spec.columns_of(mkeys))
            us = us * (tgt / np.maximum(src, 1e-12))
        if count:
            self.stats.model += len(keys)
            if above.any():
                self.stats.fallback("gemm", "extrapolated", int(above.sum()))
            if dproxy.any():
                self.stats.fallback("gemm", "dtype_proxy", int(dproxy.sum()))
            if not direct:
                self.stats.fallback("gemm", "proxy_gpu", len(keys))
        return us

    # ---- prediction ----

    def predict_us(self, ops: Iterable[dict]) -> list[float]:
        """Predicts the duration in microseconds of each op descriptor.

        Raises:
            DescriptorError: for a malformed descriptor; the message names its index and field.
        """
        return self.predict_parts(normalize_batch(ops if isinstance(ops, list) else list(ops)))

    def predict_parts(self, parts_of: list[list[tuple[str, tuple]]]) -> list[float]:
        """Like predict_us, for already-normalised ops (lists of (family, key) parts).

        NOTE: batched a family at a time: the exact-key cache is read for the whole batch,
        the misses are grouped by family and each family's grid (or model) is looked up once
        for all its keys with numpy; only dict/tuple work stays per part.
        """
        n = len(parts_of)
        stats = self.stats
        stats.ops += n
        if n and parts_of and set(map(len, parts_of)) == {1}:
            flat = list(map(itemgetter(0), parts_of))
            owner = None
        else:
            flat, owner = [], []
            for i, parts in enumerate(parts_of):
                flat.extend(parts)
                owner.extend([i] * len(parts))
        fams = list(map(itemgetter(0), flat))
        by_family = stats.by_family
        for f, c in Counter(fams).items():
            by_family[f] += c
        cache = self._cache
        vals = list(map(cache.get, flat))
        miss = [j for j, v in enumerate(vals) if v is None]
        stats.cache_hits += len(flat) - len(miss)
        if miss:
            pending: dict[str, list[int]] = {}
            if len(set(map(fams.__getitem__, miss))) == 1:
                pending[fams[miss[0]]] = miss
            else:
                for j in miss:
                    g = pending.get(fams[j])
                    if g is None:
                        pending[fams[j]] = [j]
                    else:
                        g.append(j)
            for family, js in pending.items():
                mparts = list(map(flat.__getitem__, js))
                keys = list(map(itemgetter(1), mparts))
                if family == "gemm":
                    us = self._gemm_batch(keys)
                else:
                    us = self._predict_family(family, keys)
                ulist = self._guard(family, keys, us).tolist()
                cache.update(zip(mparts, ulist))
                if len(cache) > self.cache_max:
                    self._evict()
                if len(js) == len(vals):
                    vals = ulist
                else:
                    for j, v in zip(js, ulist):
                        vals[j] = v
        if owner is None:
            return vals
        out = [0.0] * n
        for i, v in zip(owner, vals):
            out[i] += v
        return out

    def _guard(self, family: str, keys: list[tuple], us: np.ndarray) -> np.ndarray:
        """The physics guard: the served value is max(prediction, the op's physical lower
        bound), physics.lower_bound_us; every raised prediction is counted per family
        (`physics_clamps`). NOTE: it runs on every computed value (grid hit, model, fallback)
        before the exact-key cache, so a cached value is already guarded and is not counted
        again, like the fallback reasons."""
        us = np.asarray(us, dtype=np.float64)
        if not self.physics_guard:
            return us
        bound = lower_bound_us(self.peaks, family, keys)
        low = below_bound(us, bound)
        if low.any():
            n = int(low.sum())
            self.stats.clamp(family, n, float(np.min(us[low] / bound[low])))
            us = np.where(low, bound, us)
        return us

    def _evict(self) -> None:
        """Drops the oldest entries of the exact-key cache down to 3/4 of its cap."""
        cache = self._cache
        drop = len(cache) - (self.cache_max * 3) // 4
        for key in list(islice(cache, drop)):
            del cache[key]
        self.stats.cache_evictions += drop

    def _gemm_batch(self, keys: list[tuple]) -> np.ndarray:
        """GEMM keys through the m-grid of their weight shape (built on first use), a shape
        at a time; above the grid or without a model, the model path."""
        n = len(keys)
        us = np.zeros(n)
        if self._gemm_model()[0] is None:
            return self._predict_family("gemm", keys)
        groups: dict[tuple, list[int]] = {}
        for j, (m, nn, k, d, b) in enumerate(keys):
            if m <= 0 or nn <= 0 or k <= 0:
                continue  # an empty GEMM: 0 us, a grid hit
            shape = (nn, k, d, b)
            g = groups.get(shape)
            if g is None:
                groups[shape] = [j]
            else:
                g.append(j)
        new = [s for s in groups if s not in self._grid_arrays]
        if new:
            self._build_grids(new)
        model_js: list[int] = []
        hits = n
        last = M_BUCKET_LIST[-1]
        own = "gemm" in self.models
        for shape, js in groups.items():
            m = np.array([keys[j][0] for j in js], dtype=np.float64)
            ok = m <= last
            ii = np.asarray(js)
            if not ok.all():
                model_js.extend(ii[~ok].tolist())
                ii, m = ii[ok], m[ok]
                hits -= int((~ok).sum())
            # NOTE: a step lookup (the value of the first bucket >= m), not an
            # interpolation: GEMM time is a staircase in m whose steps sit just past multiples
            # of the CTA tile (64/128/256 rows, all bucket boundaries), e.g. n = k = 4096 on
            # H100: 49 us at m = 1024, 65 us at m = 1040; interpolating put half the step at
            # 1040.
            us[ii] = self._grid_arrays[shape][np.searchsorted(M_BUCKETS, m, side="left")]
            if len(ii):
                if shape[2] not in HALF_DTYPES:
                    self.stats.fallback("gemm", "dtype_proxy", len(ii))
                if not own:
                    self.stats.fallback("gemm", "proxy_gpu", len(ii))
        self.stats.grid_hits += hits
        if model_js:
            us[model_js] = self._predict_family("gemm", [keys[j] for j in model_js])
        return us

    def _predict_family(self, family: str, keys: list[tuple]) -> np.ndarray:
        fam = FAMILIES[family]
        if fam.analytic is not None:
            self.stats.fallback(family, "analytic", len(keys))
            return fam.analytic(self.peaks, keys)
        if family == "gemm":
            model = self._gemm_model()[0]
            if model is not None:
                us = self._model_gemm(keys)
                # Above the grid: never below the grid's last (largest-m) value.
                for j, key in enumerate(keys):
                    g = self._grids.get(tuple(key[1:]))
                    if g is not None and key[0] > M_BUCKET_LIST[-1]:
                        us[j] = max(us[j], g[-1])
                return us
        if family == "attention_prefill" and self.fa_prefill is not None:
            return self._predict_prefill(keys)
        if self.family_grids is not None and fam.grid is not None and \
                self._family_model(family)[0] is not None:
            before = self.family_grids.model_ops
            us, hit, ext, reasons = self.family_grids.lookup_family(family, keys)
            nmodel = self.family_grids.model_ops - before
            self.stats.model += nmodel
            nh = int(hit.sum()) - nmodel
            self.stats.grid_hits += nh
            self.stats.grid_builds = self.family_grids.builds + len(self.family_grids.memo)
            if ext.any():
                self.stats.fallback(family, "extrapolated", int(ext.sum()))
            for r, c in reasons.items():
                self.stats.fallback(family, r, c)
            if hit.all():
                return us
            miss = np.nonzero(~hit)[0]
            us[miss] = self._counted_model(family, [keys[i] for i in miss])
            return us
        return self._counted_model(family, keys)

    def _predict_prefill(self, keys: list[tuple]) -> np.ndarray:
        """Attention prefill with the FlashAttention model (fa_prefill "min" or "only")."""
        family = "attention_prefill"
        n = len(keys)
        cols = FAMILIES[family].columns_of(keys)
        fa = fa_prefill_us(self.peaks, cols, params=self.fa_params)
        if self.fa_prefill == "only":
            self.stats.fallback(family, "fa_analytic", n)
            # NOTE: the decode-step floor (below) holds here too: on H100 it carries the
            # measured ~22 us of a one-sequence decode into short prefills
            return np.maximum(fa, self._decode_floor(keys))
        if self.family_grids is not None:
            fg = self.family_grids
            before = fg.model_ops
            data, _, ext, rcount = fg.lookup_family(family, keys)
            nmodel = fg.model_ops - before
            self.stats.model += nmodel
            self.stats.grid_hits += n - nmodel
            self.stats.grid_builds = fg.builds + len(fg.memo)
            reasons = list(rcount)
        else:
            data, ext, reasons = self._model_family(family, keys)
            self.stats.model += n
        # NOTE: the data's kernel is slower than vLLM's where the FA model is faster; both are
        # non-decreasing in tokens, keys, sequences and heads, so their minimum is too. (A
        # value below the physical bound is raised, and counted, by the physics guard.)
        us = np.minimum(fa, data)
        # NOTE: a chunk of q > 1 new tokens reads at least the K/V that a decode step over
        # the same sequences reads (vLLM runs both in one kernel), so it is not served faster
        # than that decode step, unless its own prefill data measured it faster: without this
        # floor a 2-token query (speculative decoding) came out at 10 us on H100, below the
        # 16 us of a 1-token decode step over the same 4096 keys. min(decode, data) is
        # monotone, so the result stays so.
        us = np.maximum(us, np.minimum(self._decode_floor(keys), data))
        # counted as fa_analytic where the served value departs from the data
        win = us < data * (1.0 - 1e-9)
        nwin = int(win.sum())
        if nwin:
            self.stats.fallback(family, "fa_analytic", nwin)
        kept = n - nwin
        if kept:
            next_ = int((ext & ~win).sum())
            if next_:
                self.stats.fallback(family, "extrapolated", next_)
            for r in reasons:
                self.stats.fallback(family, r, kept)
        return us

    def _decode_floor(self, keys: list[tuple]) -> np.ndarray:
        """The served decode time of the same sequences with one new token each (uncounted;
        0 without a decode model)."""
        dkeys = [decode_step(k) for k in keys]
        if self._family_model("attention_decode")[0] is None:
            return np.zeros(len(keys))
        if self.family_grids is not None:
            us, hit, _, _ = self.family_grids.lookup_family("attention_decode", dkeys)
            if not hit.all():
                miss = np.nonzero(~hit)[0]
                us[miss] = self._model_family("attention_decode", [dkeys[i] for i in miss])[0]
            return us
        return self._model_family("attention_decode", dkeys)[0]

    def _family_model(self, family: str) -> tuple[FittedModel | None, Peaks | None, str | None]:
        """The model serving a family: own, kernel proxy (another GPU's measurement of the
        kernel the serving stack runs) or proxy GPU; with its peaks and fallback reason."""
        if family in self.kernel_proxy_models:
            m, gpu = self.kernel_proxy_models[family]
            return m, peaks(gpu), "kernel_proxy"
        model = self.models.get(family)
        if model is not None:
            return model, self.peaks, None
        if family in self.proxy_models:
            return self.proxy_models[family], self.proxy_peaks, "proxy_gpu"
        return None, None, None

    def _model_family(self, family: str, keys: list[tuple]
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The uncounted model path of a non-GEMM family: (us, extrapolated mask, reasons that
        apply to every key). What the grids are built from."""
        model, p, reason = self._family_model(family)
        spec = FAMILIES[family]
        if model is None:
            us = np.array([spec.fallback(self.peaks, dict(zip(spec.columns, k))) for k in keys])
            return us, np.zeros(len(keys), dtype=bool), ["roofline"]
        us, above = predict_keys(model, p, keys)
        if reason is not None:
            cols = spec.columns_of(keys)
            tgt, src = spec.ideal(self.peaks, cols), spec.ideal(p, cols)
            if spec.proxy_shift:
                # NOTE: decode on another part of the same architecture (h200 from the
                # measured h100-sxm): only the roofline time changes, us - ideal(source) +
                # ideal(target); where memory-bound that is the bandwidth ratio on the HBM
                # time, and the fixed cost of a call (the measured ~22 us of one short
                # sequence on H100) is kept rather than shrunk by the bandwidth ratio. Time
                # above the bound stays above it: us - src >= 0 on the source.
                us = us - src + tgt
            else:
                us = us * tgt / np.maximum(src, 1e-12)
        return us, above, [reason] if reason else []

    def _counted_model(self, family: str, keys: list[tuple]) -> np.ndarray:
        us, above, reasons = self._model_family(family, keys)
        if reasons != ["roofline"]:
            self.stats.model += len(keys)
        if above.any():
            self.stats.fallback(family, "extrapolated", int(above.sum()))
        for r in reasons:
            self.stats.fallback(family, r, len(keys))
        return us

    def predict_one(self, op: dict) -> float:
        return self.predict_us([op])[0]
