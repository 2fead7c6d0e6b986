"""`revati explain RUN_DIR`: where each kind of engine step spent its virtual time.

Reads the step logs of a `revati run` folder (``steps.replica<i>.jsonl`` for rank 0 of replica
i, ``steps.replica<i>.rank<r>.jsonl`` for rank r; revati/vllm_plugin/steps.py writes them),
groups the steps of each rank by kind (decode-only, prefill-only, mixed prefill + decode) and
batch bucket (requests in the batch), and prints, per group, the mean step and its parts on
the critical path:

* GPU busy: predicted GPU work on this process's timelines (any stream) during the step;
* CPU while the GPU was idle, by component (model runner, scheduler, other engine work);
* waits while the GPU was idle: for another process (the scheduler's broadcast to TP workers,
  zmq), for locks, the GIL and queues, for the other ranks of a collective, after a GPU sync
  (the wake-up), sleeps, prediction-sidecar misses, JIT freezes.

They add up to the step (``active``: the step minus the time the engine had no work at all,
which is shown apart); the residual is what the counters do not explain, checked against 1%.
A second table shows what the step's thread did (the same time, overlapping the GPU): its CPU
states, the thread's own CPU clock (``cpu``), and ``untracked`` (CPU states' time its CPU
clock does not cover: blocked where the shim does not look, or queued for a core).
Writes explain.json and explain.png (stacked bars) into the folder.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

#: Batch buckets (requests in the step), as (low, high) inclusive.
BUCKETS = [(1, 1), (2, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 128), (129, 10**9)]
KINDS = ("decode", "mixed", "prefill")

#: Critical-path parts: (key, label, the anatomy states whose GPU-idle time they are).
PARTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("cpu_runner", "CPU: model runner", ("runner",)),
    ("cpu_sched", "CPU: scheduler", ("sched",)),
    ("cpu_other", "CPU: other (engine loop, I/O)", ("run", "input")),
    ("wait_process", "wait: another process (scheduler, IPC)", ("yield", "poll")),
    ("wait_lock", "wait: locks, GIL, queues", ("cond", "sem")),
    ("wait_collective", "wait: other ranks (collective)", ("collective",)),
    ("wait_gpu", "wait: GPU sync wake-up", ("gpu",)),
    ("sleep", "sleep", ("sleep",)),
    ("sidecar", "predictor sidecar misses", ("sidecar",)),
    ("frozen", "JIT freeze", ("frozen",)),
]
PART_LABELS = {"gpu_busy": "GPU busy (predicted)", **{k: label for k, label, _ in PARTS}}
#: Thread view: (key, label, states).
THREAD = [
    ("cpu_states", "CPU states", ("run", "runner", "sched", "input")),
    ("gpu_wait", "GPU sync", ("gpu",)),
    ("process_wait", "another process", ("yield", "poll")),
    ("lock_wait", "locks/GIL/queues", ("cond", "sem")),
    ("collective_wait", "collective", ("collective",)),
    ("other_wait", "sleep/sidecar/JIT", ("sleep", "sidecar", "frozen")),
]
CHECK_TOLERANCE = 0.01


def bucket_of(n: int) -> str:
    for lo, hi in BUCKETS:
        if lo <= n <= hi:
            return str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
    return "0"


def kind_of(step: dict) -> str:
    pre, dec = int(step.get("num_prefill", 0)), int(step.get("num_decode", 0))
    return "decode" if pre == 0 else ("mixed" if dec > 0 else "prefill")


def critical_parts(step: dict) -> dict[str, float]:
    """A step's parts on the critical path (ms); with ``idle`` apart. They add up to the step."""
    a = step["anatomy"]
    ms, gpu = a.get("ms", {}), a.get("gpu_ms", {})
    out = {"gpu_busy": a.get("gpu_busy_ms", 0.0) - gpu.get("idle", 0.0)}
    for key, _, states in PARTS:
        out[key] = sum(ms.get(s, 0.0) - gpu.get(s, 0.0) for s in states)
    out["idle"] = ms.get("idle", 0.0)
    return out


def thread_parts(step: dict) -> dict[str, float]:
    a = step["anatomy"]
    ms = a.get("ms", {})
    out = {key: sum(ms.get(s, 0.0) for s in states) for key, _, states in THREAD}
    out["cpu"] = a.get("cpu_ms", 0.0)
    out["untracked"] = a.get("untracked_ms", 0.0)
    out["gpu_work"] = a.get("gpu_work_ms", 0.0)
    return out


@dataclass
class Group:
    kind: str
    bucket: str
    steps: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        n = len(self.steps)
        active = [s["dur_ms"] - critical_parts(s)["idle"] for s in self.steps]
        crit = [critical_parts(s) for s in self.steps]
        thr = [thread_parts(s) for s in self.steps]
        keys = ["gpu_busy", *[k for k, _, _ in PARTS]]
        parts = {k: sum(c[k] for c in crit) / n for k in keys}
        mean_active = sum(active) / n
        residual = mean_active - sum(parts.values())
        worst = max(abs(a - sum(c[k] for k in keys)) / a if a > 0 else 0.0 for a, c in zip(active, crit))
        return {
            "kind": self.kind, "bucket": self.bucket, "count": n,
            "mean_ms": mean_active, "median_ms": statistics.median(active),
            "mean_step_ms": sum(s["dur_ms"] for s in self.steps) / n,
            "idle_ms": sum(c["idle"] for c in crit) / n,
            "parts_ms": parts, "residual_ms": residual,
            "worst_step_residual": worst,
            "thread_ms": {k: sum(t[k] for t in thr) / n for k in thr[0]},
            "tokens": sum(int(s.get("num_tokens", 0)) for s in self.steps) / n,
        }


def step_logs(run_dir: Path) -> dict[str, Path]:
    """'replica<i>/rank<r>' -> its step log (a single .jsonl file is rank 0 of replica 0)."""
    if run_dir.is_file():
        return {"replica0/rank0": run_dir}
    out: dict[str, Path] = {}
    for p in sorted(run_dir.glob("steps.replica*.jsonl")):
        m = re.fullmatch(r"steps\.replica(\d+)(?:\.rank(\d+))?\.jsonl", p.name)
        if m:
            out[f"replica{m.group(1)}/rank{m.group(2) or 0}"] = p
    return dict(sorted(out.items(), key=lambda kv: tuple(int(x) for x in re.findall(r"\d+", kv[0]))))


def read_steps(path: Path) -> list[dict]:
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return steps


def explain_rank(steps: list[dict]) -> dict:
    """Groups and summaries of one rank's steps."""
    usable = [s for s in steps if s.get("anatomy") and s.get("dur_ms")]
    groups: dict[tuple[str, str], Group] = {}
    for s in usable:
        key = (kind_of(s), bucket_of(int(s.get("num_reqs", 0))))
        groups.setdefault(key, Group(*key)).steps.append(s)
    order = {k: i for i, k in enumerate(KINDS)}
    border = {bucket_of(lo): i for i, (lo, _) in enumerate(BUCKETS)}
    summaries = [g.summary() for _, g in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], border[kv[0][1]]))]
    within = [s for s in usable if _residual(s) <= CHECK_TOLERANCE]
    pids = sorted({s.get("pid") for s in steps if s.get("pid") is not None})
    engine_thread = any(s["anatomy"].get("ms", {}).get("sched") for s in usable)
    return {
        "steps": len(steps), "with_anatomy": len(usable), "without_anatomy": len(steps) - len(usable),
        "check": {"tolerance": CHECK_TOLERANCE, "within": len(within), "of": len(usable),
                  "worst": max((_residual(s) for s in usable), default=0.0)},
        "pids": pids,
        "engine_core_thread": engine_thread,
        "groups": summaries,
    }


def _residual(s: dict) -> float:
    """How far the thread's states miss the step, relative to it: 0 when their sum lies within
    the step as the clock measured it around the counters' reads at its two ends
    ([dur - t_end_read_ms, dur + t_read_ms]: a preemption between a clock read and the counters'
    read), else the distance to that interval."""
    total = sum(s["anatomy"].get("ms", {}).values())
    dur = s["dur_ms"]
    lo, hi = dur - (s.get("t_end_read_ms") or 0.0), dur + (s.get("t_read_ms") or 0.0)
    miss = lo - total if total < lo else (total - hi if total > hi else 0.0)
    return miss / dur if dur > 0 else 0.0


def cross_rank(per_rank: dict[str, list[dict]]) -> dict:
    """Rank r vs rank 0 of the same replica: steps matched by their number."""
    out = {}
    for name, steps in per_rank.items():
        rep, rank = name.split("/")
        if rank == "rank0" or f"{rep}/rank0" not in per_rank:
            continue
        base = {s.get("step"): s for s in per_rank[f"{rep}/rank0"] if s.get("dur_ms")}
        pairs = [(base[s["step"]], s) for s in steps if s.get("dur_ms") and s.get("step") in base]
        if not pairs:
            continue
        diffs = [abs(a["dur_ms"] - b["dur_ms"]) for a, b in pairs]
        same = sum(1 for a, b in pairs if a.get("num_tokens") == b.get("num_tokens"))
        out[name] = {"matched": len(pairs), "same_batch": same,
                     "mean_ms_rank0": sum(a["dur_ms"] for a, _ in pairs) / len(pairs),
                     "mean_ms": sum(b["dur_ms"] for _, b in pairs) / len(pairs),
                     "mean_abs_diff_ms": sum(diffs) / len(diffs)}
    return out


def bench_start(run_dir: Path) -> float | None:
    """When the load generator's first request started (its clock: virtual CLOCK_MONOTONIC under
    the time warp, as the steps' ``t``), from the run's bench.json; None without one."""
    bench = run_dir / "bench.json" if run_dir.is_dir() else None
    if bench is None or not bench.exists():
        return None
    try:
        starts = [x for x in json.loads(bench.read_text()).get("start_times") or [] if x is not None]
    except (OSError, json.JSONDecodeError):
        return None
    return min(starts) if starts else None


def explain(run_dir: Path, *, all_steps: bool = False) -> dict:
    """The report of a run folder. Steps that began before the benchmark's first request
    (vLLM's warm-up, the load generator's probe request and the idle time up to the run) are
    left out unless all_steps."""
    logs = step_logs(run_dir)
    per_rank = {name: read_steps(p) for name, p in logs.items()}
    t0 = None if all_steps else bench_start(run_dir)
    before = {}
    if t0 is not None:
        for name, steps in per_rank.items():
            kept = [s for s in steps if s.get("t_start", s.get("t", t0)) >= t0]
            before[name] = len(steps) - len(kept)
            per_rank[name] = kept
    return {
        "run_dir": str(run_dir),
        "bench_start": t0,
        "steps_before_bench": before,
        "files": {k: str(v) for k, v in logs.items()},
        "ranks": {name: explain_rank(steps) for name, steps in per_rank.items()},
        "cross_rank": cross_rank(per_rank),
        "parts": PART_LABELS,
    }


def _who(name: str, r: dict) -> str:
    pids = ", ".join(str(p) for p in r["pids"])
    if r["engine_core_thread"]:
        return (f"{name} (pid {pids}): steps run on the engine core's thread: its scheduler and the "
                f"model runner are one process, so 'CPU' is the engine core's")
    return (f"{name} (pid {pids}): a worker process; 'CPU' is this worker's, the scheduler (engine core, "
            f"another process) shows as 'wait: another process'")


def print_report(rep: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=200)
    if not rep["ranks"]:
        console.print(f"revati explain: no step logs (steps.replica*.jsonl) in {rep['run_dir']}")
        return
    if rep.get("bench_start") is not None:
        left = ", ".join(f"{n} {k}" for k, n in rep["steps_before_bench"].items())
        console.print(f"Steps from the benchmark's first request on (left out before it, warm-up and probe: {left}; "
                      f"--all keeps them).", highlight=False)
    for name, r in rep["ranks"].items():
        console.print(_who(name, r), highlight=False)
        if not r["groups"]:
            console.print(f"  {r['steps']} steps, none with an anatomy (was the time warp off?)")
            continue
        keys = ["gpu_busy", *[k for k, _, _ in PARTS]]
        used = [k for k in keys if any(abs(g["parts_ms"][k]) >= 0.005 for g in r["groups"])]
        t = Table(title=f"{name}: mean step on the critical path, ms (% of the step)", title_justify="left")
        for col in ("kind", "batch", "steps", "tokens", "step ms", "median"):
            t.add_column(col, justify="left" if col in ("kind", "batch") else "right")
        for k in used:
            t.add_column(PART_LABELS[k], justify="right")
        t.add_column("residual", justify="right")
        t.add_column("idle (apart)", justify="right")
        for g in r["groups"]:
            m = g["mean_ms"]

            def cell(v: float) -> str:
                return f"{v:.2f} ({100 * v / m:.0f}%)" if m > 0 else f"{v:.2f}"

            t.add_row(g["kind"], g["bucket"], str(g["count"]), f"{g['tokens']:.0f}", f"{m:.2f}",
                      f"{g['median_ms']:.2f}", *[cell(g["parts_ms"][k]) for k in used], cell(g["residual_ms"]),
                      f"{g['idle_ms']:.2f}")
        console.print(t)
        tt = Table(title=f"{name}: what the step's thread did, mean ms (overlapping the GPU)", title_justify="left")
        for col in ("kind", "batch", *[label for _, label, _ in THREAD], "thread CPU", "untracked",
                    "GPU work launched"):
            tt.add_column(col, justify="left" if col in ("kind", "batch") else "right")
        for g in r["groups"]:
            th = g["thread_ms"]
            tt.add_row(g["kind"], g["bucket"], *[f"{th[k]:.2f}" for k, _, _ in THREAD], f"{th['cpu']:.2f}",
                       f"{th['untracked']:.2f}", f"{th['gpu_work']:.2f}")
        console.print(tt)
        c = r["check"]
        verdict = "OK" if c["within"] == c["of"] else "NOT OK"
        console.print(f"  check: the thread's states add up to the step (as the clock read it around the "
                      f"counters) within {100 * c['tolerance']:.0f}% for "
                      f"{c['within']} of {c['of']} steps (worst {100 * c['worst']:.2f}%): {verdict}; "
                      f"{r['without_anatomy']} step(s) without an anatomy (open at exit, or no time warp)",
                      highlight=False)
    for name, x in rep["cross_rank"].items():
        console.print(f"cross-rank: {name} vs rank 0: {x['matched']} steps matched ({x['same_batch']} with the same "
                      f"batch), mean {x['mean_ms']:.2f} vs {x['mean_ms_rank0']:.2f} ms, mean |difference| "
                      f"{x['mean_abs_diff_ms']:.2f} ms", highlight=False)


def write_plot(rep: dict, path: Path) -> bool:
    """Stacked bars of the mean step's parts per group, one panel per rank."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = [(n, r) for n, r in rep["ranks"].items() if r["groups"]][:8]
    if not ranks:
        return False
    keys = ["gpu_busy", *[k for k, _, _ in PARTS]]
    colors = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(len(ranks), 1, figsize=(max(8, 1.1 * max(len(r["groups"]) for _, r in ranks) + 3),
                                                       4.2 * len(ranks)), squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], ranks):
        labels = [f"{g['kind']}\n{g['bucket']} (n={g['count']})" for g in r["groups"]]
        x = range(len(labels))
        bottom = [0.0] * len(labels)
        for i, k in enumerate(keys):
            vals = [max(g["parts_ms"][k], 0.0) for g in r["groups"]]
            if not any(v > 0 for v in vals):
                continue
            ax.bar(x, vals, bottom=bottom, label=PART_LABELS[k], color=colors[i % len(colors)])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.scatter(list(x), [g["mean_ms"] for g in r["groups"]], marker="_", s=400, color="black", zorder=3,
                   label="mean step (active)")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("virtual ms per step")
        ax.set_title(f"{name}: where a step's virtual time goes (critical path)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def print_wall_time(folder: Path) -> None:
    """Where the run's wall time went: the ledger that benchmarks/speed.py wrote (ledger.json),
    else the start-up phases of report.json."""
    from revati.run import ledger

    d = ledger.load(folder)
    if d is not None:
        print(f"Wall-time ledger ({ledger.LEDGER_FILE}, benchmarks/speed.py):\n{ledger.format_ledger(d)}")
        phases = d.get("startup_phases_s")
    else:
        try:
            phases = json.loads((folder / "report.json").read_text())["emulation"]["startup"]["phases_s"]
        except (OSError, ValueError, KeyError, TypeError):
            return
    if phases:
        print("start-up and load phases (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
              + ("" if d is not None else f"; CPU by process: benchmarks/speed.py (no {ledger.LEDGER_FILE} here)"))


def explain_main(run_dir: str, *, plot: bool = True, json_out: str | None = None, all_steps: bool = False) -> int:
    path = Path(run_dir)
    if not path.exists():
        print(f"revati explain: {path} does not exist")
        return 2
    rep = explain(path, all_steps=all_steps)
    print_report(rep)
    folder = path if path.is_dir() else path.parent
    print_wall_time(folder)
    out_json = Path(json_out) if json_out else folder / "explain.json"
    out_json.write_text(json.dumps(rep, indent=1))
    written = [str(out_json)]
    if plot and write_plot(rep, folder / "explain.png"):
        written.append(str(folder / "explain.png"))
    print(f"revati explain: wrote {', '.join(written)}")
    if not rep["ranks"]:
        return 1
    checks = [r["check"] for r in rep["ranks"].values()]
    return 0 if all(c["within"] == c["of"] for c in checks) else 1
