"""inference-sim H100 attention tables: inference-sim-bench/mha/{decode,prefill}/h100/*.csv.

Source: inference-sim/inference-sim @ a410740f, `bench_data/` (Apache-2.0), measured on H100
SXM, latencies in microseconds (see inference-sim-bench/README.md there).

  decode/h100/<H>-<KVH>-<D>-tp<T>.csv   dtype, kv_dtype, batch_size, kv_len, latency_us, mfu
      one decode step of `batch_size` sequences of `kv_len` keys each (the new token's
      included); H query heads, KVH KV heads and head dim D of the whole model over T GPUs,
      so per GPU H/T query and KVH/T KV heads (the schema's heads are per GPU)
  prefill/h100/<H>-<KVH>-<D>.csv        dtype, seq_len, latency_us, mfu
      causal prefill of one fresh sequence of `seq_len` tokens, TP 1

This is a split-KV, FlashAttention-class kernel: 32-32-128 TP1 at batch 16 x 1024 keys moves
268 MB in 93 us (86% of the 3.35 TB/s HBM peak). `mfu` is the source's estimate and is not
kept: the models recompute what they need from the shapes.

NOTE: warm-up. Every decode file's first timed row (its smallest shape, one sequence) takes
35.7-40.8 us, where the other one-sequence rows of up to ~70 MB of KV take 21-27 us: in 17 of
the 18 files the first row is 1.5-1.8x a bigger shape of the same file (32-32-128 TP1:
1 x 256 keys 37.0 us, 1 x 512 keys 21.9 us; `warmup_rows` finds exactly these 17), and in the
18th (40-40-128 TP1: 1 x 1024 keys, 21 MB, 37.8 us) it is 1.7x the 22 us that every other
file's one sequence of that size takes. The first call paid for something the rest did not, so
each decode file's first row is dropped (DROP_FIRST_DECODE_ROW). Among the rows kept, the worst
inversion is 1.22x (64-8-128 TP2: 1 x 8192 keys 30.8 us, 1 x 16384 keys 25.3 us), noise.
The prefill files' first rows (1024 tokens, 38-53 us) are in line with their layouts' sizes
and are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revati.predictor.importers.common import read_csv, rel
from revati.predictor.schema import Provenance, make_row

INFERENCE_SIM_COMMIT = "a410740f"
DROP_FIRST_DECODE_ROW = True
# What warmup_rows (the evidence check, see the module docstring) calls a warm-up: slower than
# this many times a row that dominates it (same file, batch and keys at least as large).
WARMUP_RATIO = 1.3
DTYPES = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "fp32": "fp32"}


def _layout(stem: str) -> tuple[int, int, int, int]:
    """'32-8-128-tp2' -> (32, 8, 128, 2); a prefill file has no tp part (TP 1)."""
    parts = stem.split("-")
    tp = int(parts[3].removeprefix("tp")) if len(parts) > 3 else 1
    return int(parts[0]), int(parts[1]), int(parts[2]), tp


def _features(b: int, q: int, kv: int, heads: int, kv_heads: int, hd: int, dtype: str,
              kv_dtype: str) -> dict[str, Any]:
    """b equal sequences of kv keys each, q of them new (causal pairs as in the schema)."""
    return {"batch_size": b, "num_tokens": b * q, "kv_len_sum": b * kv, "kv_len_max": kv,
            "attn_pairs": float(b * q * (kv - (q - 1) / 2.0)), "num_heads": heads,
            "num_kv_heads": kv_heads, "head_dim": hd, "dtype": dtype,
            "kv_cache_dtype": "auto" if kv_dtype == dtype else kv_dtype}


def warmup_rows(rows: list[tuple[int, int, float]]) -> set[int]:
    """Indices of (batch, keys, us) rows slower than WARMUP_RATIO x a dominating row."""
    bad = set()
    for i, (b, k, t) in enumerate(rows):
        for j, (b2, k2, t2) in enumerate(rows):
            if j != i and b2 >= b and k2 >= k and t > WARMUP_RATIO * t2:
                bad.add(i)
                break
    return bad


def import_inference_sim_attention(path: Path, root: Path) -> list[dict[str, Any]]:
    """Imports one decode or prefill table (the phase is read from the path)."""
    phase = path.parent.parent.name  # mha/<phase>/h100/<file>
    heads, kv_heads, hd, tp = _layout(path.stem)
    h, kvh = heads // tp, max(kv_heads // tp, 1)
    prov = Provenance(source="inference-sim", source_version=INFERENCE_SIM_COMMIT,
                      source_path=rel(path, root))
    model = f"{heads}-{kv_heads}-{hd}-tp{tp}"
    raw = read_csv(path)
    out: list[dict[str, Any]] = []
    if phase == "decode":
        shapes = [(int(r["batch_size"]), int(r["kv_len"]), float(r["latency_us"])) for r in raw]
        drop = {0} if DROP_FIRST_DECODE_ROW and shapes else set()
        for i, (r, (b, kv, t)) in enumerate(zip(raw, shapes)):
            if i in drop:
                continue
            dt = DTYPES[r["dtype"]]
            feats = _features(b, 1, kv, h, kvh, hd, dt, DTYPES[r["kv_dtype"]])
            out.append(make_row("h100-sxm", "attention_decode", "attn_decode", feats,
                                {"median": t}, prov, model))
    elif phase == "prefill":
        for r in raw:
            L = int(r["seq_len"])
            dt = DTYPES[r["dtype"]]
            feats = _features(1, L, L, h, kvh, hd, dt, dt)
            out.append(make_row("h100-sxm", "attention_prefill", "attn_prefill", feats,
                                {"median": float(r["latency_us"])}, prov, model))
    else:
        raise ValueError(f"{path}: unknown phase directory {phase!r}")
    return out
