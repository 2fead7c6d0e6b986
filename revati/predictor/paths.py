"""Where the predictor finds its data and models.

Environment variables (read here only):
  REVATI_PROFILES_DIR   profiles root (default: profiles/ of the checkout)
  REVATI_PROFILE_DATA   public raw profiles (default: shared/data/profiles beside the checkout)
  REVATI_MODEL_CACHE    cache of fitted models keyed by data+config hash
                        (default: ~/.cache/revati/models)
"""

from __future__ import annotations

from pathlib import Path

from revati import envs

REPO_ROOT = Path(__file__).resolve().parents[2]


def profiles_root() -> Path:
    return Path(envs.get("REVATI_PROFILES_DIR") or REPO_ROOT / "profiles")


def shipped_models_root() -> Path:
    return profiles_root() / "models"


def shared_data_root() -> Path:
    env = envs.get("REVATI_PROFILE_DATA")
    if env:
        return Path(env)
    for cand in (REPO_ROOT / "shared" / "data" / "profiles",
                 REPO_ROOT.parent / "shared" / "data" / "profiles"):
        if cand.is_dir():
            return cand
    return REPO_ROOT.parent / "shared" / "data" / "profiles"


def model_cache_root() -> Path:
    env = envs.get("REVATI_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "revati" / "models"
