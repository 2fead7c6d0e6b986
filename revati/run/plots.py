"""PNG plots of a `revati run` report (matplotlib, when it is installed).

* latency_cdf.png: CDFs of TTFT, TPOT, ITL and E2EL;
* timeline.png: output token throughput (1 s bins) and the running batch size over the run's
  time (virtual under the time warp). Token times come from the requests (start + TTFT +
  ITLs); the batch size is `num_reqs` of each model step in the step log (REVATI_STEP_LOG),
  one engine process per replica.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def token_times(rows: list[dict]) -> list[float]:
    """Seconds (from the first request's start) at which each output token arrived."""
    out = []
    for r in rows:
        if not r["success"] or r.get("start_s") is None:
            continue
        t = r["start_s"] + r["ttft_ms"] / 1e3
        out.append(t)
        for itl in r["itl_ms"]:
            t += itl / 1e3
            out.append(t)
    return out


def throughput_series(rows: list[dict], bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts, output tokens/s) over the run."""
    times = token_times(rows)
    if not times:
        return np.array([]), np.array([])
    edges = np.arange(0.0, max(times) + bin_s, bin_s)
    counts, _ = np.histogram(times, bins=edges)
    return edges[:-1], counts / bin_s


def batch_series(step_logs: list[Path], t0: float | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per replica: (seconds since t0, running requests) of each model step of one engine process."""
    series = []
    for log in step_logs:
        if not log.exists():
            continue
        by_pid: dict[int, list[tuple[float, int]]] = {}
        for line in log.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "t" in d:
                by_pid.setdefault(d.get("pid", 0), []).append((d["t"], int(d.get("num_reqs", 0))))
        if not by_pid:
            continue
        pts = sorted(max(by_pid.values(), key=len))  # one worker (TP ranks see the same batch)
        t = np.array([p[0] for p in pts])
        series.append((t - (t0 if t0 is not None else t[0]), np.array([p[1] for p in pts])))
    return series


def write_plots(out: Path, rows: list[dict], step_logs: list[Path], t0_monotonic: float | None,
                time_label: str) -> list[str]:
    """Writes the PNGs; returns their names (none when matplotlib is missing)."""
    if not available():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, name) in zip(axes.flat, (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"),
                                           ("e2el_ms", "E2EL"))):
        if key == "itl_ms":
            vals = [x for r in rows if r["success"] for x in r["itl_ms"]]
        else:
            vals = [r[key] for r in rows if r["success"] and r[key] is not None]
        if vals:
            v = np.sort(vals)
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), drawstyle="steps-post")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of " + ("tokens" if key == "itl_ms" else "requests"))
        ax.set_title(f"{name} CDF")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Latency CDFs ({time_label})")
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=100)
    plt.close(fig)
    written.append("latency_cdf.png")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    x, y = throughput_series(rows)
    if len(x):
        ax1.step(x, y, where="post")
    ax1.set_ylabel("output tokens/s")
    ax1.set_title("Output token throughput (1 s bins)")
    ax1.grid(alpha=0.3)
    for i, (t, n) in enumerate(batch_series(step_logs, t0_monotonic)):
        # Steps before the first request are vLLM's start-up profiling and warm-up runs.
        keep = [k for k, tk in enumerate(t) if tk >= 0]
        ax2.step([t[k] for k in keep], [n[k] for k in keep], where="post", label=f"replica {i}")
    ax2.set_ylabel("running requests")
    ax2.set_title("Running batch size per model step")
    ax2.set_xlabel(f"seconds since the first request ({time_label})")
    ax2.grid(alpha=0.3)
    if len(step_logs) > 1:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=100)
    plt.close(fig)
    written.append("timeline.png")
    return written
