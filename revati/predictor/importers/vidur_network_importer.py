"""Vidur network profiles: vidur/network/<gpu>_<topology>/{all_reduce,send_recv}.csv.

`size` is the message size in bytes. `num_workers` ranks sit on `devices_per_node` GPUs per
node, so num_workers > devices_per_node means the collective crosses nodes (InfiniBand).
Topology: `*_dgx` is NVSwitch (nvswitch); `*_pairwise_nvlink` is GPUs bridged in NVLink pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revati.predictor.importers.common import GPU_KEYS, VIDUR_COMMIT, ms_stats, read_csv, rel
from revati.predictor.schema import Provenance, make_row

TOPOLOGIES = {"dgx": "nvswitch", "pairwise_nvlink": "pairwise_nvlink"}


def import_vidur_network(path: Path, root: Path) -> list[dict[str, Any]]:
    """Imports one all_reduce.csv or send_recv.csv."""
    folder = path.parent.name  # e.g. h100_dgx
    gpu_name, topo = folder.split("_", 1)
    gpu = GPU_KEYS[gpu_name]
    topology = TOPOLOGIES[topo]
    prov = Provenance(source="vidur", source_version=VIDUR_COMMIT, source_path=rel(path, root))
    out: list[dict[str, Any]] = []
    for r in read_csv(path):
        kind = r["collective"]
        st = ms_stats(r, kind)
        if st is None:
            continue
        feats = {"kind": kind, "bytes": int(r["size"]), "ranks": int(r["num_workers"]),
                 "ranks_per_node": int(r["devices_per_node"]), "topology": topology}
        out.append(make_row(gpu, "collective", kind, feats, st, prov))
    return out
