"""Vidur compute profiles: vidur/compute/<gpu>/<org>/<model>/mlp.csv.

Each row holds the per-op times of one transformer layer for (num_tokens, TP). The model config
columns of the row (n_head, n_kv_head, n_embd, n_expanded_embd, use_gated_mlp) give the exact
shape of every op:
  attn_pre_proj   GEMM m=T, k=E, n=(H + 2*KV)*D/TP   (fused QKV)
  attn_post_proj  GEMM m=T, k=H*D/TP, n=E           (O)
  mlp_up_proj     GEMM m=T, k=E, n=(2 if gated else 1)*F/TP
  mlp_down_proj   GEMM m=T, k=F/TP, n=E
  input_layernorm, post_attention_layernorm   norm over T x E
  attn_rope       rotary over T x (H + KV)*D/TP
  mlp_act         activation (SiLU-and-mul when gated) producing T x F/TP
  add             elementwise residual add over T x E
  emb             embedding lookup producing T x E
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revati.predictor.importers.common import (
    ACT_BYTES, GPU_KEYS, VIDUR_COMMIT, VIDUR_DTYPE, ms_stats, read_csv, rel, truthy)
from revati.predictor.schema import Provenance, make_row


def import_vidur_compute(path: Path, root: Path) -> list[dict[str, Any]]:
    """Imports one mlp.csv; the GPU and model are read from the path."""
    parts = path.relative_to(root).parts  # vidur/compute/<gpu>/<org>/<model>/mlp.csv
    gpu = GPU_KEYS[parts[2]]
    model = f"{parts[3]}/{parts[4]}"
    prov = Provenance(source="vidur", source_version=VIDUR_COMMIT, source_path=rel(path, root))
    out: list[dict[str, Any]] = []
    b = ACT_BYTES
    for r in read_csv(path):
        t = int(r["num_tokens"])
        tp = int(r["num_tensor_parallel_workers"])
        h, kv, e, f = (int(r["n_head"]), int(r["n_kv_head"]), int(r["n_embd"]),
                       int(r["n_expanded_embd"]))
        d = e // h
        gated = truthy(r["use_gated_mlp"])
        gemms = {
            "attn_pre_proj": (e, (h + 2 * kv) * d // tp),
            "attn_post_proj": (h * d // tp, e),
            "mlp_up_proj": (e, (2 if gated else 1) * f // tp),
            "mlp_down_proj": (f // tp, e),
        }
        for op, (k, n) in gemms.items():
            st = ms_stats(r, op)
            if st is not None:
                out.append(make_row(gpu, "gemm", op, {"m": t, "n": n, "k": k, "dtype": VIDUR_DTYPE,
                                                       "batch": 1}, st, prov, model))
        rot = (h + kv) * d // tp
        act_in = (2 if gated else 1) * f // tp
        small = {
            "input_layernorm": ("norm", e, 2 * t * e * b),
            "post_attention_layernorm": ("norm", e, 2 * t * e * b),
            "attn_rope": ("rotary", rot, 2 * t * rot * b),
            "mlp_act": ("activation", f // tp, t * (act_in + f // tp) * b),
            "add": ("elementwise", e, 3 * t * e * b),
            "emb": ("embedding", e, t * e * b + 8 * t),
        }
        for op, (family, hidden, nbytes) in small.items():
            st = ms_stats(r, op)
            if st is not None:
                out.append(make_row(gpu, family, op, {"tokens": t, "hidden": hidden,
                                                      "bytes": nbytes, "dtype": VIDUR_DTYPE},
                                    st, prov, model))
    return out
