"""Finds the public profile files under a data root and imports each with its importer."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from revati.predictor.importers.inference_sim_attention_importer import (
    import_inference_sim_attention)
from revati.predictor.importers.llmservingsim_layers_importer import import_llmservingsim_layers
from revati.predictor.importers.vidur_attention_importer import import_vidur_attention
from revati.predictor.importers.vidur_compute_importer import import_vidur_compute
from revati.predictor.importers.vidur_network_importer import import_vidur_network
from revati.predictor.schema import profile_path, write_profile

Importer = Callable[[Path, Path], list[dict[str, Any]]]

# (glob under the data root, importer). Order is the order rows are written in.
IMPORTERS: tuple[tuple[str, Importer], ...] = (
    ("vidur/compute/*/*/*/mlp.csv", import_vidur_compute),
    ("vidur/compute-legacy/*/attention.csv", import_vidur_attention),
    ("vidur/network/*/all_reduce.csv", import_vidur_network),
    ("vidur/network/*/send_recv.csv", import_vidur_network),
    ("llmservingsim/*/*/*/tp*/layers.csv", import_llmservingsim_layers),
    ("llmservingsim/*/*/*/tp*/attention.csv", import_vidur_attention),
    ("inference-sim-bench/mha/*/h100/*.csv", import_inference_sim_attention),
)


def default_data_root() -> Path:
    """shared/data/profiles beside the checkout (REVATI_PROFILE_DATA overrides)."""
    from revati.predictor.paths import shared_data_root

    return shared_data_root()


def import_all(root: str | Path | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Imports every known file under `root`; returns rows keyed by (gpu, family)."""
    root = Path(root) if root is not None else default_data_root()
    if not root.is_dir():
        raise FileNotFoundError(f"profile data root {root} does not exist")
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for pattern, importer in IMPORTERS:
        for path in sorted(root.glob(pattern)):
            for row in importer(path, root):
                out[(row["gpu"], row["family"])].append(row)
    return dict(out)


def build_profiles(src_root: str | Path | None, out_root: str | Path) -> dict[str, int]:
    """Imports everything under `src_root` and writes profiles/<gpu>/<family>.csv files.

    Returns:
        Row counts by "<gpu>/<family>".
    """
    counts: dict[str, int] = {}
    for (gpu, family), rows in sorted(import_all(src_root).items()):
        counts[f"{gpu}/{family}"] = write_profile(profile_path(out_root, gpu, family), family, rows)
    return counts
