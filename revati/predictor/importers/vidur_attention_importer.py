"""Vidur-format attention profiles (Vidur's legacy a100/attention.csv, and LLMServingSim's
H100 attention.csv, which uses the same columns).

Per row: n_embd, n_q_head, n_kv_head, num_tensor_parallel_workers, batch_size,
prefill_chunk_size, kv_cache_size, is_prefill. The two sources mean different things by
kv_cache_size:

* Vidur (legacy A100): the context already in the KV cache of each of batch_size sequences, so
  a prefill chunk of q tokens attends over kv_cache_size + q keys and a decode step over
  kv_cache_size + 1 keys per sequence.
* LLMServingSim (H100): the TOTAL number of keys of the call, the new tokens included, summed
  over the batch. NOTE: the files themselves show it: every prefill chunk's smallest
  kv_cache_size equals the chunk (32 -> 32, 1024 -> 1024), and the prefill time steps with
  ceil(kv_cache_size / 64) whatever the chunk (chunk 32 and chunk 1024 at kv_cache_size 1024
  both take ~32 us); a decode batch of b at a given kv_cache_size takes 1/b of the batch-1 time
  (1685, 830, 417 us for b = 1, 2, 4 at 63745), and read per sequence, batch 64 x 3649 keys
  would move 239 MB in 34 us, faster than HBM. Rows with kv_cache_size < batch_size (fewer than
  one key per sequence; they all report ~2.6 us, a no-op) are dropped.
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


def attention_features_total(batch_size: int, q_len: int, total_keys: int, num_heads: int,
                             num_kv_heads: int, head_dim: int, dtype: str,
                             kv_cache_dtype: str = "auto") -> dict[str, Any]:
    """Features of `batch_size` sequences that hold `total_keys` keys together (new tokens
    included), split as evenly as possible, each adding q_len tokens."""
    base, extra = divmod(total_keys, batch_size)
    lens = [base + 1] * extra + [base] * (batch_size - extra)
    pairs = sum(q_len * (kv - (q_len - 1) / 2.0) for kv in lens)
    return {"batch_size": batch_size, "num_tokens": batch_size * q_len,
            "kv_len_sum": total_keys, "kv_len_max": max(lens), "attn_pairs": pairs,
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
    total_keys = parts[0] != "vidur"
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
        if total_keys:
            if ctx < bs * q:
                continue  # fewer keys than new tokens: a degenerate (no-op) measurement
            feats = attention_features_total(bs, q, ctx, h // tp, max(kv // tp, 1), e // h,
                                             dtype)
        else:
            feats = attention_features(bs, q, ctx, h // tp, max(kv // tp, 1), e // h, dtype)
        out.append(make_row(gpu, family, op, feats, st, prov, model))
    return out
