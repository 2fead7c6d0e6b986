"""PNG plots of a `revati run` report (matplotlib, when it is installed).

* latency_cdf.png: CDFs of TTFT, TPOT, ITL and E2EL;
* timeline.png: output token throughput (1 s bins) and the running batch size over the run's
  time (virtual under the time warp). Token times come from the requests (start + TTFT +
  ITLs); the batch size is `num_reqs` of each model step in the step log (REVATI_STEP_LOG),
  one engine process per replica.

And of a `revati sweep` (revati/run/sweep_local.py):

* pareto.png: cost per hour against p99 TTFT and p99 TPOT (each with its front of the
  children no other is both cheaper and faster than, and the SLO's p99 target), and output
  throughput against p99 TTFT with rank()'s Pareto front. Succeeded children only.
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


def cost_latency_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the (name, cost, latency) points no other point dominates (cost and latency
    at most as high, one strictly lower), by cost then latency."""
    def dominated(p) -> bool:
        return any(q[1] <= p[1] and q[2] <= p[2] and (q[1] < p[1] or q[2] < p[2]) for q in points)

    return [p[0] for p in sorted((p for p in points if not dominated(p)), key=lambda p: (p[1], p[2], p[0]))]


def _p99(row: dict, metric: str) -> float | None:
    v = ((row.get("metrics") or {}).get(metric) or {}).get("p99")
    return None if v is None else float(v)


def write_sweep_plot(path: Path, children: list[dict], pareto: list[str], slo=None,
                     cheapest: str | None = None) -> bool:
    """Writes pareto.png from rank()'s children rows (name, phase, costPerHour, meetsSlo,
    metrics), its pareto list and the cheapest child's name; slo: the sweep's Slo (its p99
    targets are drawn). Returns False (nothing written) without matplotlib or without a
    Succeeded child."""
    ok = [r for r in children if r.get("phase") == "Succeeded" and r.get("metrics")]
    if not available() or not ok:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def annotate(ax, pts) -> None:
        """Each point's child index; children at the same point share one label."""
        at: dict[tuple[float, float], list[str]] = {}
        for name, x, y, *_ in pts:
            at.setdefault((x, y), []).append(name.rsplit("-", 1)[-1])
        for (x, y), labels in at.items():
            ax.annotate(",".join(labels), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (metric, title) in zip(axes[:2], (("ttftMs", "TTFT"), ("tpotMs", "TPOT"))):
        pts = [(r["name"], float(r["costPerHour"]), _p99(r, metric), bool(r.get("meetsSlo"))) for r in ok
               if r.get("costPerHour") is not None and _p99(r, metric) is not None]
        for met, color, text in ((True, "tab:green", "meets the SLO"), (False, "tab:orange", "misses the SLO")):
            sel = [p for p in pts if p[3] == met]
            if sel:
                ax.scatter([p[1] for p in sel], [p[2] for p in sel], color=color, label=text, zorder=3)
        annotate(ax, pts)
        best = [p for p in pts if p[0] == cheapest]
        if best:
            ax.scatter([best[0][1]], [best[0][2]], s=220, facecolors="none", edgecolors="black", zorder=4,
                       label=f"cheapest meeting the SLO ({cheapest})")
        front = cost_latency_front([p[:3] for p in pts])
        by_name = {p[0]: p for p in pts}
        if front:
            ax.step([by_name[n][1] for n in front], [by_name[n][2] for n in front], where="post",
                    color="tab:blue", alpha=0.6, label="cost-latency front")
        targets = getattr(slo, metric, None) if slo is not None else None
        if targets is not None and targets.p99 is not None:
            ax.axhline(targets.p99, color="tab:red", linestyle="--", alpha=0.7, label=f"SLO p99 {targets.p99:g} ms")
        ax.set_xlabel("cost (USD per hour)")
        ax.set_ylabel(f"{title} p99 (ms)")
        ax.set_title(f"cost vs {title} p99")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    pts = [(r["name"], float(r["metrics"]["outputThroughput"]), _p99(r, "ttftMs")) for r in ok
           if r["metrics"].get("outputThroughput") is not None and _p99(r, "ttftMs") is not None]
    ax.scatter([p[1] for p in pts], [p[2] for p in pts], color="tab:gray", zorder=3)
    annotate(ax, pts)
    by_name = {p[0]: p for p in pts}
    front = [n for n in pareto if n in by_name]
    if front:
        ax.plot([by_name[n][1] for n in front], [by_name[n][2] for n in front], "o-", color="tab:blue",
                label="Pareto front (sweep.json)", zorder=4)
        ax.legend(fontsize=8)
    ax.set_xlabel("output throughput (tokens per virtual second)")
    ax.set_ylabel("TTFT p99 (ms)")
    ax.set_title("throughput vs TTFT p99")
    ax.grid(alpha=0.3)
    failed = sum(1 for r in children if r.get("phase") == "Failed")
    fig.suptitle(f"{len(ok)} succeeded children (labels: child index)"
                 + (f"; {failed} failed, not plotted" if failed else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
