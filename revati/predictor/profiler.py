"""`revati profile`: measure op timings on a real GPU into the profile schema.

Sweeps GEMMs (m x (n, k) weight shapes), attention (torch SDPA, flash where available) for
prefill and decode batches, RMSNorm, SiLU-and-mul, rotary-style elementwise ops, the residual
add and memcpy in three directions. Each op is timed with CUDA events over `iters` launches
after warm-up; the median, mean, min, max and std of the per-launch times are written with
the GPU name, driver, torch and CUDA versions and the date.

NOTE: it refuses to run without CUDA: profiles are measurements, never estimates.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path
from typing import Any, Callable

from revati.predictor.schema import Provenance, make_row, write_profile

GEMM_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192)
GEMM_NK = ((4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (8192, 8192),
           (10240, 8192), (57344, 8192), (8192, 28672), (1024, 4096), (4096, 1024),
           (128256, 4096))
SMALL_TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)
PREFILL = ((1, 128, 0), (1, 512, 0), (1, 1024, 1024), (1, 2048, 0), (1, 4096, 0), (4, 512, 512))
DECODE_BS = (1, 8, 32, 64, 128, 256)
DECODE_CTX = (128, 512, 2048, 8192)
MEMCPY_BYTES = (4096, 65536, 1 << 20, 16 << 20, 256 << 20)


class NoGpuError(RuntimeError):
    """torch.cuda is not available: there is nothing to measure."""


def _time_cuda(torch: Any, fn: Callable[[], Any], iters: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0)  # ms -> us
    return {"median": statistics.median(times), "mean": statistics.fmean(times),
            "min": min(times), "max": max(times),
            "std": statistics.pstdev(times) if len(times) > 1 else 0.0}


def profile_main(out_dir: str | Path, gpu_key: str, iters: int = 20, warmup: int = 5,
                 quick: bool = False) -> dict[str, int]:
    """Measures the sweeps on the local GPU and writes <out_dir>/<gpu_key>/<family>.csv.

    Args:
        out_dir: profiles root to write into.
        gpu_key: catalog key to file the rows under (e.g. h100-sxm).
        iters / warmup: timed and untimed launches per point.
        quick: a small sweep (smoke test on a real GPU).
    Returns:
        Row counts by family.
    Raises:
        NoGpuError: when torch.cuda.is_available() is False.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch comes with vllm
        raise NoGpuError(f"revati profile needs torch with CUDA: {e}") from None
    if not torch.cuda.is_available():
        raise NoGpuError("revati profile measures a real GPU, and torch.cuda.is_available() is "
                         "False on this machine; run it where a CUDA GPU is visible")
    import torch.nn.functional as F

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    try:
        import subprocess

        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:
        driver = ""
    prov = Provenance(source="revati-profile", source_version=f"device={props.name}",
                      source_path="", date=_dt.date.today().isoformat(),
                      torch_version=torch.__version__, cuda_version=str(torch.version.cuda or ""),
                      driver_version=driver)
    dt = torch.bfloat16
    rows: dict[str, list[dict]] = {}
    ms = GEMM_M[:6] if quick else GEMM_M
    nks = GEMM_NK[:2] if quick else GEMM_NK

    def add(family: str, op: str, feats: dict, fn: Callable[[], Any]) -> None:
        st = _time_cuda(torch, fn, iters, warmup)
        rows.setdefault(family, []).append(make_row(gpu_key, family, op, feats, st, prov,
                                                    count=iters))

    for n, k in nks:
        w = torch.randn(k, n, device=dev, dtype=dt)
        for m in ms:
            a = torch.randn(m, k, device=dev, dtype=dt)
            add("gemm", "torch.mm", {"m": m, "n": n, "k": k, "dtype": "bf16", "batch": 1},
                lambda a=a, w=w: torch.mm(a, w))
        del w
    heads, kv_heads, hd = 32, 8, 128
    for bs, q, ctx in (PREFILL[:2] if quick else PREFILL):
        kv = ctx + q
        qt = torch.randn(bs, heads, q, hd, device=dev, dtype=dt)
        kt = torch.randn(bs, heads, kv, hd, device=dev, dtype=dt)
        vt = torch.randn(bs, heads, kv, hd, device=dev, dtype=dt)
        pairs = bs * q * (kv - (q - 1) / 2.0)
        feats = {"batch_size": bs, "num_tokens": bs * q, "kv_len_sum": bs * kv, "kv_len_max": kv,
                 "attn_pairs": pairs, "num_heads": heads, "num_kv_heads": heads, "head_dim": hd,
                 "dtype": "bf16", "kv_cache_dtype": "auto"}
        add("attention_prefill", "sdpa", feats,
            lambda qt=qt, kt=kt, vt=vt, c=(ctx == 0): F.scaled_dot_product_attention(
                qt, kt, vt, is_causal=c))
    for bs in (DECODE_BS[:2] if quick else DECODE_BS):
        for ctx in (DECODE_CTX[:2] if quick else DECODE_CTX):
            qt = torch.randn(bs, heads, 1, hd, device=dev, dtype=dt)
            kt = torch.randn(bs, heads, ctx + 1, hd, device=dev, dtype=dt)
            vt = torch.randn(bs, heads, ctx + 1, hd, device=dev, dtype=dt)
            feats = {"batch_size": bs, "num_tokens": bs, "kv_len_sum": bs * (ctx + 1),
                     "kv_len_max": ctx + 1, "attn_pairs": float(bs * (ctx + 1)),
                     "num_heads": heads, "num_kv_heads": heads, "head_dim": hd, "dtype": "bf16",
                     "kv_cache_dtype": "auto"}
            add("attention_decode", "sdpa", feats,
                lambda qt=qt, kt=kt, vt=vt: F.scaled_dot_product_attention(qt, kt, vt))
    hidden, inter = 4096, 14336
    for t in (SMALL_TOKENS[:3] if quick else SMALL_TOKENS):
        x = torch.randn(t, hidden, device=dev, dtype=dt)
        g = torch.ones(hidden, device=dev, dtype=dt)
        add("norm", "rms_norm", {"tokens": t, "hidden": hidden, "bytes": 2 * t * hidden * 2,
                                 "dtype": "bf16"},
            lambda x=x, g=g: F.rms_norm(x, (hidden,), g))
        u = torch.randn(t, 2 * inter, device=dev, dtype=dt)
        add("activation", "silu_and_mul", {"tokens": t, "hidden": inter,
                                           "bytes": 3 * t * inter * 2, "dtype": "bf16"},
            lambda u=u: F.silu(u[:, :inter]) * u[:, inter:])
        y = torch.randn(t, hidden, device=dev, dtype=dt)
        add("elementwise", "add", {"tokens": t, "hidden": hidden, "bytes": 3 * t * hidden * 2,
                                   "dtype": "bf16"}, lambda x=x, y=y: x + y)
        qk = torch.randn(t, (heads + kv_heads) * hd, device=dev, dtype=dt)
        cos = torch.randn(t, (heads + kv_heads) * hd, device=dev, dtype=dt)
        add("rotary", "mul_add", {"tokens": t, "hidden": (heads + kv_heads) * hd,
                                  "bytes": 2 * t * (heads + kv_heads) * hd * 2, "dtype": "bf16"},
            lambda qk=qk, cos=cos: qk * cos + qk.roll(1, -1) * cos)
    for nbytes in (MEMCPY_BYTES[:3] if quick else MEMCPY_BYTES):
        n = nbytes // 2
        host = torch.empty(n, dtype=dt, pin_memory=True)
        d1 = torch.empty(n, device=dev, dtype=dt)
        d2 = torch.empty(n, device=dev, dtype=dt)
        add("memcpy", "h2d", {"bytes": nbytes, "direction": "h2d"},
            lambda d1=d1, host=host: d1.copy_(host, non_blocking=True))
        add("memcpy", "d2h", {"bytes": nbytes, "direction": "d2h"},
            lambda d1=d1, host=host: host.copy_(d1, non_blocking=True))
        add("memcpy", "d2d", {"bytes": nbytes, "direction": "d2d"}, lambda d1=d1, d2=d2: d2.copy_(d1))
    counts = {}
    for family, rs in rows.items():
        counts[family] = write_profile(Path(out_dir) / gpu_key / f"{family}.csv", family, rs)
    return counts
