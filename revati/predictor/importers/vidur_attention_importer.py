"""Vidur-format attention profiles (Vidur's legacy a100/attention.csv, and LLMServingSim's
H100 attention.csv, which uses the same columns).

Per row: n_embd, n_q_head, n_kv_head, num_tensor_parallel_workers, batch_size,
prefill_chunk_size, kv_cache_size, is_prefill. kv_cache_size is the context already in the KV
cache, so a prefill chunk of q tokens attends over kv_cache_size + q keys, and a decode step
over kv_cache_size + 1 keys, for each of batch_size sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revati.predictor.importers.common import (
    GPU_KEYS, LLMSERVINGSIM_COMMIT, LLMSERVINGSIM_DTYPE, VIDUR_DTYPE, VIDUR_LEGACY_COMMIT,
    ms_stats, read_csv, rel, truthy)
from revati.predictor.schema import Provenance, make_row


def attention_features(batch_size: int, q_len: int, context: int, num_heads: int,
                       num_kv_heads: int, head_dim: int, dtype: str,
                       kv_cache_dtype: str = "auto") -> dict[str, Any]:
    """Features of `batch_size` equal sequences, each adding q_len tokens after `context`."""
    kv = context + q_len
    pairs = batch_size * q_len * (kv - (q_len - 1) / 2.0)
    return {"batch_size": batch_size, "num_tokens": batch_size * q_len,
            "kv_len_sum": batch_size * kv, "kv_len_max": kv, "attn_pairs": pairs,
            "num_heads": num_heads, "num_kv_heads": num_kv_heads, "head_dim": head_dim,
            "dtype": dtype, "kv_cache_dtype": kv_cache_dtype}


def import_vidur_attention(path: Path, root: Path) -> list[dict[str, Any]]:
    """Imports one attention.csv in Vidur's column format."""
    parts = path.relative_to(root).parts
    if parts[0] == "vidur":  # vidur/compute-legacy/<gpu>/attention.csv
        gpu = GPU_KEYS[parts[2]]
        model = ""
        prov = Provenance(source="vidur", source_version=VIDUR_LEGACY_COMMIT,
                          source_path=rel(path, root))
        dtype = VIDUR_DTYPE
    else:  # llmservingsim/<GPU>/<org>/<model>/tp<k>/attention.csv
        gpu = GPU_KEYS[parts[1]]
        model = f"{parts[2]}/{parts[3]}"
        prov = Provenance(source="llmservingsim", source_version=LLMSERVINGSIM_COMMIT,
                          source_path=rel(path, root))
        dtype = LLMSERVINGSIM_DTYPE
    out: list[dict[str, Any]] = []
    for r in read_csv(path):
        tp = int(r["num_tensor_parallel_workers"])
        h, kv, e = int(r["n_q_head"]), int(r["n_kv_head"]), int(r["n_embd"])
        bs = int(r["batch_size"])
        ctx = int(r["kv_cache_size"])
        if truthy(r["is_prefill"]):
            family, op, q = "attention_prefill", "attn_prefill", int(r["prefill_chunk_size"])
        else:
            family, op, q = "attention_decode", "attn_decode", 1
        st = ms_stats(r, op)
        if st is None:
            continue
        feats = attention_features(bs, q, ctx, h // tp, max(kv // tp, 1), e // h, dtype)
        out.append(make_row(gpu, family, op, feats, st, prov, model))
    return out
