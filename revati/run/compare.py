"""`revati compare A B`: two results side by side with relative differences.

Either side may be a revati report.json or a real `vllm bench serve --save-result` JSON:
they share the metric keys. Relative difference is (B - A) / A.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from revati.run.report import METRICS

HEAD_KEYS = ["completed", "failed", "duration", "request_throughput", "request_goodput", "output_throughput",
             "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests"]
LATENCY_KEYS = [f"{s}_{m}_ms" for m in METRICS for s in ("mean", "median", "std", "p50", "p90", "p99")]


class CompareError(ValueError):
    pass


def load_result(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise CompareError(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise CompareError(f"{p}: not JSON ({e})") from None
    if not isinstance(d, dict) or "completed" not in d:
        raise CompareError(f"{p}: not a revati report or a `vllm bench serve --save-result` JSON "
                           "(no 'completed' key)")
    return d


def rows(a: dict, b: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    """(key, A, B, relative difference) for every metric either side has."""
    out = []
    for key in HEAD_KEYS + LATENCY_KEYS:
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        rel = None
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va != 0 and math.isfinite(va):
            rel = (vb - va) / abs(va)
        out.append((key, va, vb, rel))
    return out


def _label(d: dict, path: str) -> str:
    e = d.get("emulation")
    if e:
        return f"{path} (revati, timewarp {'on' if e.get('timewarp') else 'off'})"
    return f"{path} (vllm bench)"


def format_compare(a: dict, b: dict, name_a: str, name_b: str) -> str:
    def f(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = [f"A: {_label(a, name_a)}", f"B: {_label(b, name_b)}", ""]
    lines.append(f"{'metric':<28} {'A':>14} {'B':>14} {'(B-A)/A':>10}")
    lines.append("-" * 69)
    for key, va, vb, rel in rows(a, b):
        lines.append(f"{key:<28} {f(va):>14} {f(vb):>14} {('%+.1f%%' % (100 * rel)) if rel is not None else '-':>10}")
    for side, d in (("A", a), ("B", b)):
        e = d.get("emulation")
        if e and not e.get("timewarp"):
            lines.append(f"note: {side} ran without the time warp: its latencies are this CPU's wall time, "
                         "not predicted GPU time")
    return "\n".join(lines)


def compare_main(path_a: str, path_b: str) -> int:
    import sys

    try:
        a, b = load_result(path_a), load_result(path_b)
    except CompareError as e:
        print(f"revati compare: {e}", file=sys.stderr)
        return 2
    print(format_compare(a, b, path_a, path_b))
    return 0
