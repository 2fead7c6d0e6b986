"""LLMServingSim per-layer profiles: llmservingsim/<GPU>/<org>/<model>/tp<k>/layers.csv.

Columns: layer_name, input (tokens), kv_cache (tokens), tp_size, latency(ns). The model's
architecture is not in the file; MODEL_CONFIGS holds the public facts of the models it covers.
The ops are HuggingFace modules timed one by one: the GEMMs (q/k/v/o, gate/up/down, lm_head)
are single cuBLAS calls and agree with Vidur's times, while norms, rope and attn are eager
PyTorch compositions of several kernels (see docs/predictor.md: they are stored but not trained
on by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revati.predictor.importers.common import (
    ACT_BYTES, GPU_KEYS, LLMSERVINGSIM_COMMIT, LLMSERVINGSIM_DTYPE, read_csv, rel)
from revati.predictor.importers.vidur_attention_importer import attention_features
from revati.predictor.schema import Provenance, make_row

# hidden, heads, kv heads, intermediate, vocab (public model cards).
MODEL_CONFIGS: dict[str, tuple[int, int, int, int, int]] = {
    "meta-llama/Llama-3.1-8B": (4096, 32, 8, 14336, 128256),
    "meta-llama/Llama-3.1-70B": (8192, 64, 8, 28672, 128256),
}


def import_llmservingsim_layers(path: Path, root: Path) -> list[dict[str, Any]]:
    """Imports one layers.csv (latencies in nanoseconds)."""
    parts = path.relative_to(root).parts  # llmservingsim/H100/<org>/<model>/tp<k>/layers.csv
    gpu = GPU_KEYS[parts[1]]
    model = f"{parts[2]}/{parts[3]}"
    e, h, kv, f, vocab = MODEL_CONFIGS[model]
    d = e // h
    prov = Provenance(source="llmservingsim", source_version=LLMSERVINGSIM_COMMIT,
                      source_path=rel(path, root))
    dt = LLMSERVINGSIM_DTYPE
    b = ACT_BYTES
    out: list[dict[str, Any]] = []
    for r in read_csv(path):
        name = r["layer_name"]
        t = int(r["input"])
        ctx = int(r["kv_cache"])
        tp = int(r["tp_size"])
        st = {"median": float(r["latency(ns)"]) / 1000.0}
        gemm = {
            "q_proj": (e, h * d // tp), "k_proj": (e, kv * d // tp), "v_proj": (e, kv * d // tp),
            "o_proj": (h * d // tp, e), "gate_proj": (e, f // tp), "up_proj": (e, f // tp),
            "down_proj": (f // tp, e), "lm_head": (e, vocab // tp),
        }.get(name)
        if gemm is not None:
            k, n = gemm
            out.append(make_row(gpu, "gemm", name, {"m": t, "n": n, "k": k, "dtype": dt,
                                                    "batch": 1}, st, prov, model, count=None))
            continue
        if name == "attn":
            feats = attention_features(1, t, ctx, h // tp, max(kv // tp, 1), d, dt)
            out.append(make_row(gpu, "attention_prefill", name, feats, st, prov, model))
            continue
        rot = (h + kv) * d // tp
        small = {
            "input_layernorm": ("norm", e, 2 * t * e * b),
            "post_layernorm": ("norm", e, 2 * t * e * b),
            "final_layernorm": ("norm", e, 2 * t * e * b),
            "rope": ("rotary", rot, 2 * t * rot * b),
            "act_fn": ("activation", f // tp, 2 * t * (f // tp) * b),
            "embedding": ("embedding", e, t * e * b + 8 * t),
        }.get(name)
        if small is None:
            raise ValueError(f"{path}: unknown layer_name {name!r}")
        family, hidden, nbytes = small
        out.append(make_row(gpu, family, name, {"tokens": t, "hidden": hidden, "bytes": nbytes,
                                                "dtype": dt}, st, prov, model))
    return out
