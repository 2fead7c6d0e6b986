"""Offline training of the per-family LightGBM models, cached by a hash of data + config.

Layout of a trained GPU (shipped ones live in profiles/models/<gpu>/, ad-hoc ones in the
cache, ~/.cache/revati/models/<gpu>/<hash>/):
  manifest.json        one entry per family: model file, data/config hash, row count,
                       training ranges of the size columns, grid keys
  <family>.txt.gz      LightGBM model text, gzip-compressed
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from revati.predictor import paths
from revati.predictor.families import FAMILIES
from revati.predictor.families.base import Family, median_us
from revati.predictor.features import LEARNED_FAMILIES, SPECS
from revati.predictor.roofline import peaks
from revati.predictor.schema import profile_path, read_profile

# 3: attention models record the ranges of Family.derived_sizes (K/V elements, (query,
# key) products) beside the columns' own
MODEL_FORMAT_VERSION = 3

# NOTE: LLMServingSim's norm/rope/act/attn rows time HuggingFace eager modules (several kernels
# each, 3-5x slower than Vidur's), so they would teach the models a different implementation
# than vLLM's fused kernels. They stay in the profiles but are not trained on by default.
DEFAULT_EXCLUDE: dict[str, dict[str, list[str]]] = {
    **{f: {"sources": ["llmservingsim"]} for f, fam in FAMILIES.items() if fam.bytes_only},
    # NOTE: LLMServingSim's H100 attention.csv times a kernel without split-KV (one CTA per
    # sequence and KV head walks all its keys: one 65536-key decode 1747 us, 1.1% of HBM
    # bandwidth; prefill ~7% of the dense peak), which vLLM does not run on Hopper; the H100
    # attention is trained on the real inference-sim tables (a split-KV FlashAttention-class
    # kernel) instead. Its layers.csv `attn` rows are HuggingFace eager attention.
    "attention_prefill": {"ops": ["attn"], "sources": ["llmservingsim"]},
    "attention_decode": {"sources": ["llmservingsim"]},
    # NOTE: on identical GEMM shapes LLMServingSim's H100 times sit 10-20% below Vidur's (other
    # cuBLAS/clock settings); mixing the two sources makes held-out shapes worse for both.
    "gemm": {"sources": ["llmservingsim"]},
}

# Families whose model predicts log(duration / roofline ideal) instead of log(duration). That
# target interpolates across unseen shapes far better, but its monotone constraints would be
# wrong (efficiency is not monotone in size), so monotonicity in the token dimension is then
# enforced by the Predictor's bucketed grids instead (see predictor.py).
DEFAULT_RESIDUAL = ["gemm"]


@dataclass
class TrainConfig:
    """What a fit depends on besides the data (part of the cache hash).

    Attributes:
        num_leaves / learning_rate / num_rounds / min_data_in_leaf: LightGBM settings.
        exclude: per family, sources or ops whose rows are not trained on.
        seed: LightGBM seed (fits are deterministic).
    """

    num_leaves: int = 31
    learning_rate: float = 0.08
    num_rounds: int = 400
    min_data_in_leaf: int = 5
    exclude: dict[str, dict[str, list[str]]] = field(default_factory=lambda: dict(DEFAULT_EXCLUDE))
    residual: list[str] = field(default_factory=lambda: list(DEFAULT_RESIDUAL))
    seed: int = 0

    def for_family(self, family: str) -> dict[str, Any]:
        spec = SPECS[family]
        rounds = self.num_rounds if family in ("gemm",) else max(self.num_rounds // 2, 50)
        if family in self.residual:
            # NOTE: L1 (the conditional median of log(duration / base)): H100 GEMM timings jump
            # by 10-50% between neighbouring token counts (cuBLAS switching kernels), and the
            # median is not dragged by those spikes; MAPE is what the targets are stated in.
            return {
                "objective": "l1", "learning_rate": self.learning_rate * 0.6,
                "num_leaves": 15, "min_data_in_leaf": 20, "num_threads": 1, "verbose": -1,
                "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
                "seed": self.seed, "deterministic": True, "force_row_wise": True,
                "num_rounds": rounds * 2,
            }
        return {
            "objective": "regression", "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
            "monotone_constraints": spec.monotone,
            "monotone_constraints_method": "advanced", "num_threads": 1,
            "verbose": -1, "seed": self.seed, "deterministic": True,
            "force_row_wise": True, "num_rounds": rounds,
        }


def select_rows(rows: Sequence[dict[str, Any]], family: str, cfg: TrainConfig) -> list[dict]:
    ex = cfg.exclude.get(family, {})
    bad_src = set(ex.get("sources", []))
    bad_ops = set(ex.get("ops", []))
    return [r for r in rows if r["source"] not in bad_src and r["op"] not in bad_ops
            and r["dur_us_median"] is not None and r["dur_us_median"] > 0]


def data_hash(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def config_hash(family: str, cfg: TrainConfig) -> str:
    what = {"cfg": asdict(cfg), "family": family, "format": MODEL_FORMAT_VERSION,
            "features": SPECS[family].monotone}
    if SPECS[family].measured is not median_us:
        # NOTE: only then, so the other families' hashes (and caches) stay as they were
        what["measured"] = SPECS[family].measured.__name__
    blob = json.dumps(what, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class FittedModel:
    """A trained family model plus what prediction needs besides the trees."""

    family: str
    gpu: str
    booster: Any
    rows: int
    ranges: dict[str, list[float]]
    grid_keys: list[list[Any]]
    data_hash: str = ""
    config_hash: str = ""
    residual: bool = False
    # Collectives: per measured configuration ("kind|ranks|ranks_per_node|topology"), the
    # monotone curve [[log bytes...], [log us...]] that the lookup interpolates (see
    # collective_curves); configurations without a curve use the booster.
    curves: dict[str, list[list[float]]] = field(default_factory=dict)

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        """log(duration) if not residual, else log(duration / ideal)."""
        return self.booster.predict(X, num_threads=1)


def _xy(spec: Family, gpu: str, rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, list]:
    keys = [spec.key_of_row(r) for r in rows]
    X, _ = spec.build(peaks(gpu), spec.columns_of(keys))
    y = np.log(np.array([spec.measured(r) for r in rows], dtype=np.float64))
    return X, y, keys


def fit_rows(gpu: str, family: str, rows: Sequence[dict], cfg: TrainConfig | None = None
             ) -> FittedModel:
    """Fits one family model on already-selected profile rows."""
    import lightgbm as lgb

    cfg = cfg or TrainConfig()
    spec = SPECS[family]
    if not rows:
        raise ValueError(f"no training rows for {gpu}/{family}")
    X, y, keys = _xy(spec, gpu, rows)
    residual = family in cfg.residual
    if residual:
        y = y - np.log(spec.residual_base(peaks(gpu), spec.columns_of(keys)))
    if spec.bytes_only:
        # NOTE: descriptors may give only `bytes`; teach the model that case with a copy of the
        # data whose tokens/hidden are missing (LightGBM routes NaN by learned direction).
        X2 = X.copy()
        X2[:, 1:3] = np.nan
        X, y = np.vstack([X, X2]), np.concatenate([y, y])
    params = cfg.for_family(family)
    rounds = params.pop("num_rounds")
    booster = lgb.train(params, lgb.Dataset(X, y, free_raw_data=True), num_boost_round=rounds)
    cols = spec.columns_of(keys)
    ranges = {c: [float(np.nanmin(cols[c])), float(np.nanmax(cols[c]))]
              for c in spec.size_columns if not np.all(np.isnan(cols[c]))}
    if spec.derived_sizes is not None:
        # NOTE: the per-column ranges miss combinations beyond the data: a 32-KV-head decode
        # over 8M keys is inside both columns' ranges of the H100 table (8M keys were measured
        # with 8 KV heads only) but has twice its largest K/V; the trees then saturate and
        # served it at half its HBM time. The ranges of the K/V elements read and of the
        # (query, key) products computed let inference shrink such an op too.
        for name, v in spec.derived_sizes(cols).items():
            ranges[name] = [float(np.nanmin(v)), float(np.nanmax(v))]
    grid_keys: list[list[Any]] = spec.grid_keys(keys) if spec.grid_keys else []
    curves = spec.curves(rows) if spec.curves else {}
    return FittedModel(family, gpu, booster, len(rows), ranges, grid_keys, residual=residual,
                       curves=curves)


def training_files(gpu: str, family: str, root: Path | None = None) -> list[Path]:
    p = profile_path(root or paths.profiles_root(), gpu, family)
    return [p] if p.exists() else []


def available_families(gpu: str, root: Path | None = None) -> list[str]:
    return [f for f in LEARNED_FAMILIES if training_files(gpu, f, root)]


def save_models(models: Sequence[FittedModel], out_dir: Path, cfg: TrainConfig) -> Path:
    """Writes model files and manifest.json to out_dir; returns the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    import lightgbm as lgb

    manifest: dict[str, Any] = {
        "format_version": MODEL_FORMAT_VERSION, "lightgbm_version": lgb.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": asdict(cfg), "families": {},
    }
    mpath = out_dir / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old.get("format_version") == MODEL_FORMAT_VERSION:
            manifest["families"] = old.get("families", {})
    for m in models:
        fname = f"{m.family}.txt.gz"
        text = m.booster.model_to_string().encode()
        with gzip.GzipFile(out_dir / fname, "wb", mtime=0) as f:
            f.write(text)
        curves_file = None
        if m.curves:
            curves_file = f"{m.family}.curves.json.gz"
            with gzip.GzipFile(out_dir / curves_file, "wb", mtime=0) as f:
                f.write(json.dumps(m.curves, sort_keys=True).encode())
        manifest["families"][m.family] = {
            "file": fname, "curves_file": curves_file, "gpu": m.gpu, "rows": m.rows, "ranges": m.ranges,
            "grid_keys": m.grid_keys, "data_hash": m.data_hash, "config_hash": m.config_hash,
            "residual": m.residual,
        }
    mpath.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return mpath


def load_models(model_dir: Path, gpu: str) -> dict[str, FittedModel]:
    """Loads every family model of a manifest directory."""
    import lightgbm as lgb

    mpath = model_dir / "manifest.json"
    if not mpath.exists():
        return {}
    manifest = json.loads(mpath.read_text())
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        return {}
    out: dict[str, FittedModel] = {}
    for family, e in manifest["families"].items():
        if family not in SPECS:
            continue
        with gzip.open(model_dir / e["file"], "rb") as f:
            booster = lgb.Booster(model_str=f.read().decode())
        curves: dict[str, list[list[float]]] = {}
        if e.get("curves_file"):
            with gzip.open(model_dir / e["curves_file"], "rb") as f:
                curves = json.loads(f.read().decode())
        out[family] = FittedModel(family, gpu, booster, e["rows"], e["ranges"], e["grid_keys"],
                                  e.get("data_hash", ""), e.get("config_hash", ""),
                                  bool(e.get("residual", False)), curves)
    return out


def train_gpu(gpu: str, families: Sequence[str] | None = None, out_dir: Path | None = None,
              cfg: TrainConfig | None = None, profiles: Path | None = None,
              use_cache: bool = True) -> dict[str, FittedModel]:
    """Trains (or fetches from the hash cache) the models of one GPU.

    Args:
        gpu: GPU key with profiles under profiles/<gpu>/.
        families: families to train (default: every family with a profile).
        out_dir: where to write manifest + models (default: the hash cache only).
        cfg: training config.
        profiles: profiles root (default: paths.profiles_root()).
        use_cache: reuse a cached fit with the same data + config hash.
    Returns:
        Fitted models by family.
    """
    cfg = cfg or TrainConfig()
    families = list(families or available_families(gpu, profiles))
    out: dict[str, FittedModel] = {}
    for family in families:
        files = training_files(gpu, family, profiles)
        if not files:
            continue
        dh, ch = data_hash(files), config_hash(family, cfg)
        cache_dir = paths.model_cache_root() / gpu / f"{family}-{dh[:12]}-{ch[:12]}"
        model: FittedModel | None = None
        if use_cache and (cache_dir / "manifest.json").exists():
            model = load_models(cache_dir, gpu).get(family)
        if model is None:
            rows = select_rows([r for f in files for r in read_profile(f)], family, cfg)
            model = fit_rows(gpu, family, rows, cfg)
            model.data_hash, model.config_hash = dh, ch
            try:
                save_models([model], cache_dir, cfg)
            except OSError:
                pass  # a read-only home only loses the cache
        out[family] = model
    if out_dir is not None:
        save_models(list(out.values()), Path(out_dir), cfg)
    return out


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
