"""Where the shim's built libraries are."""

from __future__ import annotations

from pathlib import Path

from revati import envs

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SHIM_NAME = "librevati_shim.so"


class ShimNotBuiltError(RuntimeError):
    pass


def shim_dir() -> Path:
    """The folder with the shim and its libcuda.so.1 / libnvidia-ml.so.1 names."""
    configured = envs.get("REVATI_SHIM_DIR")
    d = Path(configured) if configured else REPO_ROOT / "shim" / "build" / "lib"
    if not (d / SHIM_NAME).exists():
        raise ShimNotBuiltError(
            f"the shim is not built: {d / SHIM_NAME} is missing. Build it with `make -C shim` "
            "(scripts/setup.sh does), or point REVATI_SHIM_DIR at a folder that has it.")
    return d
