"""The shim's per-process statistics (REVATI_STATS_FILE) of one run: their sum and its summary."""

from __future__ import annotations

import json
import os
from pathlib import Path


def summarize_stats(prefix: str | os.PathLike) -> dict:
    """Adds up the per-process statistics files <prefix>.<pid>.json of one run."""
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*.json"))
    total: dict = {"processes": 0, "ops": {}, "busy_ns": {}, "family_ns": {}, "step_family_ns": {},
                   "step_unmapped_family_ns": {},
                   "predictor": {}}
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        total["processes"] += 1
        for key in ("steps", "graph_launches"):
            total[key] = total.get(key, 0) + d.get(key, 0)
        for key in ("ops", "busy_ns", "family_ns", "step_family_ns", "step_unmapped_family_ns",
                    "predictor"):
            for k, v in d.get(key, {}).items():
                total[key][k] = total[key].get(k, 0) + v
        total["duration_source"] = d.get("duration_source", "?")
    p = total["predictor"]
    lookups = p.get("hits", 0) + p.get("misses", 0)
    total["hit_rate"] = p.get("hits", 0) / lookups if lookups else None
    pred_ns = p.get("mapped_ns", 0) + p.get("unmapped_ns", 0)
    total["coverage"] = p.get("mapped_ns", 0) / pred_ns if pred_ns else None
    # per kernel family, once serving began: the share of its predicted time that a descriptor
    # (not the launch geometry) gave
    total["family_coverage"] = {
        k: 1.0 - total["step_unmapped_family_ns"].get(k, 0) / v
        for k, v in total["step_family_ns"].items() if v}
    return total


def format_summary(total: dict, sidecar_stats: dict | None = None) -> str:
    """The end-of-run lines of `revati exec`: predicted GPU time by family, hit rate, fallbacks."""
    lines = [f"revati: {total['processes']} process(es) issued GPU work; duration source "
             f"{total.get('duration_source', '-')}"]
    busy = {k: v for k, v in total["busy_ns"].items() if v}
    fam = {k: v for k, v in total["family_ns"].items() if v}
    if busy:
        lines.append("revati: predicted GPU time by op kind: " +
                     ", ".join(f"{k} {v / 1e6:.1f} ms" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])))
    if fam:
        lines.append("revati: predicted kernel time by family: " +
                     ", ".join(f"{k} {v / 1e6:.1f} ms" for k, v in sorted(fam.items(), key=lambda kv: -kv[1])))
    if total.get("hit_rate") is not None:
        p = total["predictor"]
        lines.append(f"revati: shim prediction cache: {p.get('hits', 0)} hits, {p.get('misses', 0)} misses "
                     f"(hit rate {100 * total['hit_rate']:.2f}%); coverage {100 * total['coverage']:.1f}% of "
                     f"predicted GPU time from mapped families ({p.get('unmapped_ops', 0)} unmapped ops, "
                     "described by launch geometry)")
    if sidecar_stats:
        pred = sidecar_stats.get("predictor", sidecar_stats)
        lines.append(f"revati: predictor fallbacks {pred.get('fallbacks_total', 0)}: {pred.get('fallbacks', {})}")
    return "\n".join(lines)
