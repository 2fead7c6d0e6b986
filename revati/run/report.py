"""The report of `revati run`: report.json, requests.jsonl and the terminal summary.

report.json has the metric keys of `vllm bench serve --save-result` (completed, failed,
request/output/total token throughput, mean/median/std/p50/p90/p99 of ttft_ms, tpot_ms,
itl_ms and e2el_ms, request_goodput when an SLO is given) at the top level, so a real bench
result JSON and a revati report compare key by key (`revati compare`). Everything about how
the numbers were made lives in the `emulation` block.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from revati.run.loadgen import LoadPlan
    from revati.run.plan import DeploymentPlan

METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "median", "std", "p50", "p90", "p99")
#: Per-request lists in bench's --save-detailed result; they go to requests.jsonl, not report.json.
DETAIL_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
               "generated_texts", "errors")


def per_request(bench: dict) -> list[dict]:
    """One dict per request from bench's --save-detailed lists (seconds → ms)."""
    n = len(bench.get("ttfts") or [])
    start = bench.get("start_times") or [None] * n
    t0 = min((s for s in start if s is not None), default=0.0)
    rows = []
    for i in range(n):
        ttft = bench["ttfts"][i]
        itl = bench["itls"][i] or []
        # NOTE: `vllm bench serve` of vLLM 0.15 saves no per-request latencies: a request's is its
        # first token's time plus every later token's gap (what newer versions save).
        lat = bench["latencies"][i] if "latencies" in bench else (ttft + sum(itl) if ttft else None)
        out_len = (bench.get("output_lens") or [0] * n)[i]
        err = (bench.get("errors") or [""] * n)[i]
        ok = not err and lat is not None and lat > 0
        row = {
            "id": i,
            "success": bool(ok),
            "start_s": (start[i] - t0) if start[i] is not None else None,
            "input_tokens": (bench.get("input_lens") or [None] * n)[i],
            "output_tokens": out_len,
            "ttft_ms": ttft * 1e3 if ok else None,
            "tpot_ms": ((lat - ttft) / (out_len - 1) * 1e3) if ok and out_len and out_len > 1 else None,
            "e2el_ms": lat * 1e3 if ok else None,
            "itl_ms": [x * 1e3 for x in itl] if ok else [],
        }
        if err:
            row["error"] = str(err)[:500]
        rows.append(row)
    return rows


def _values(rows: list[dict], metric: str) -> list[float]:
    if metric == "itl":
        return [x for r in rows if r["success"] for x in r["itl_ms"]]
    return [r[f"{metric}_ms"] for r in rows if r["success"] and r[f"{metric}_ms"] is not None]


def fill_metrics(result: dict, rows: list[dict]) -> list[str]:
    """Adds any of mean/median/std/p50/p90/p99 x ttft/tpot/itl/e2el that bench did not report.

    Returns the keys that were computed here (from per-request data, numpy's linear
    percentiles, as bench computes them)."""
    filled = []
    for m in METRICS:
        vals = _values(rows, m)
        for s in STATS:
            key = f"{s}_{m}_ms"
            if result.get(key) is not None:
                continue
            if not vals:
                result[key] = 0.0  # bench's convention for an empty list (np.mean(0))
            elif s == "mean":
                result[key] = float(np.mean(vals))
            elif s == "median":
                result[key] = float(np.median(vals))
            elif s == "std":
                result[key] = float(np.std(vals))
            else:
                result[key] = float(np.percentile(vals, float(s[1:])))
            filled.append(key)
    return filled


def slo_attainment(spec_slo, result: dict) -> list[dict]:
    """Each SLO target against the measured percentile."""
    out = []
    if spec_slo is None:
        return out
    for metric, targets in (("ttft", spec_slo.ttftMs), ("tpot", spec_slo.tpotMs), ("e2el", spec_slo.e2elMs)):
        if targets is None:
            continue
        for p in ("p50", "p90", "p99"):
            target = getattr(targets, p)
            if target is None:
                continue
            actual = result.get(f"{p}_{metric}_ms")
            out.append({"metric": f"{p}_{metric}_ms", "target_ms": target, "actual_ms": actual,
                        "met": actual is not None and actual <= target})
    return out


def versions(engine=None) -> dict[str, str]:
    """revati's, the emulated engine's and torch's versions. With `engine` (the run's adapter),
    the engine's entries are the emulated build's (its own environment: vLLM 0.15.1 on torch
    2.9.1, SGLang ...), and `harness_vllm` is revati's own vLLM, whose `vllm bench serve` drove
    the load; without it, what revati's environment has."""
    out = {}
    for dist in ("revati", "vllm", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    if engine is not None:
        out["harness_vllm"] = out["vllm"]
        if engine.distribution != "vllm":
            out.pop("vllm")
        out["engine"] = engine.name
        out[engine.distribution] = engine.version
        try:
            out["torch"] = engine.build().torch
        except (KeyError, AttributeError):
            pass
    import platform

    out["python"] = platform.python_version()
    return out


@dataclass
class ClockFacts:
    """What a runner that owns the Timekeeper knows of the clock (revati run)."""

    timekeeper: Any = None          # the Timekeeper, None with the time warp off
    governor: Any = None            # the contention governor, when one ran
    dilation_effective: float | None = None
    dilation_how: str | None = None


@dataclass
class EmulationReport:
    """The report's emulation block: each runner fills what it knows, the rest is left out.

    A part given as None is left out of the block (a pod knows neither the Timekeeper, which the
    coordinator owns, nor the replicas' shim and sidecar counters). A part that is given but
    empty (no Timekeeper with the time warp off, no sidecar with another predictor) is written
    with null values, so the keys of a runner's report do not depend on the spec.
    """

    plan: "DeploymentPlan"
    load: "LoadPlan"
    latency_clock: str
    virtual_s: float | None
    wall_s: float | None
    total_wall_s: float | None
    notes: list[str]
    setup_wall_s: float | None = None
    clock: ClockFacts | None = None       # None: left out
    shim_stats: dict | None = None        # summed per-process shim stats (launch.stats); None: left out
    sidecar_stats: dict | None = None     # the sidecars' counters, summed; None: left out
    trace: dict[str, int] | None = None   # trace file -> events; None: left out, {}: no trace
    router_requests: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the runner's own keys, last

    def block(self) -> dict:
        s = self.plan.spec.spec
        em = s.emulation
        e: dict[str, Any] = {
            "timewarp": em.timewarp,
            "latency_clock": self.latency_clock,
            "virtual_s": self.virtual_s,
            "wall_s": self.wall_s,
            "speedup": (self.virtual_s / self.wall_s) if self.virtual_s and self.wall_s else None,
        }
        if self.clock is not None:
            e["setup_wall_s"] = self.setup_wall_s
        e["total_wall_s"] = self.total_wall_s
        c = self.clock
        if c is not None:
            tk = c.timekeeper.stats if c.timekeeper is not None else None
            e.update({
                "jumps": tk.jumps if tk else None,
                "jumped_s": tk.jumped_ns / 1e9 if tk else None,
                # the clock stood still while vLLM JIT-compiled (or loaded) a Triton kernel on first use
                "jit_freezes": tk.freezes if tk else None,
                "jit_frozen_wall_s": tk.frozen_ns / 1e9 if tk else None,
                # the clock held while the shim asked the prediction sidecar (emulator work, not target work)
                "predictor_holds": tk.holds if tk else None,
                "predictor_held_wall_s": tk.held_ns / 1e9 if tk else None,
                # the Timekeeper's own work: loop turns, messages, samples and their outcomes
                "timekeeper": asdict(tk) if tk else None,
            })
        e["dilation"] = em.dilation
        if c is not None:
            e["dilation_effective"] = c.dilation_effective
            e["dilation_how"] = c.dilation_how
        e["host_contention"] = em.hostContention if em.timewarp else None
        if c is not None:
            g = c.governor
            e["host_cores"] = g.cores if g else None
            e["contention_factor"] = {**g.stats.as_dict(), "measure": g.mode} if g else None
        st = self.shim_stats
        if st is not None:
            e["shim_steps"] = st.get("steps")
            e["graph_launches"] = st.get("graph_launches")
        pred: dict[str, Any] = {"source": em.predictor}
        if st is not None:
            pred.update({"duration_source": st.get("duration_source"), "shim_cache_hit_rate": st.get("hit_rate"),
                         "coverage": st.get("coverage"), "unmapped_ops": st["predictor"].get("unmapped_ops", 0)})
        sc = self.sidecar_stats
        if sc is not None:
            pred.update({"sidecar_ops": sc.get("ops"), "sidecar_hit_rate": sc.get("hit_rate"),
                         "fallbacks_total": sc.get("fallbacks_total") if sc else None,
                         "fallbacks": sc.get("fallbacks") if sc else None,
                         # predictions the physics guard raised to their bound (a bug of their source)
                         "physics_clamps": sc.get("physics_clamps") if sc else None})
        e["predictor"] = pred
        if st is not None:
            e["predicted_gpu_ms_by_family"] = {k: v / 1e6 for k, v in sorted(st["family_ns"].items(),
                                                                            key=lambda kv: -kv[1]) if v}
            e["predicted_gpu_ms_by_kind"] = {k: v / 1e6 for k, v in st["busy_ns"].items() if v}
        e.update(self.plan.deployment_block(self.load))
        if self.trace is not None:
            e["trace"] = self.trace or None
        e["versions"] = versions(getattr(self.plan, "engine", None))
        e["notes"] = self.notes
        e.update(self.extra)
        if self.router_requests is not None:
            e["topology"]["router_requests"] = self.router_requests
        return e


def build_report(bench: dict, rows: list[dict], emulation: dict, spec_slo=None) -> dict:
    """report.json: bench's scalar keys (+ filled percentiles) and the emulation block."""
    report = {"outcome": "completed"}  # ("failed": a process died or hung, revati/run/faults.py)
    report.update((k, v) for k, v in bench.items() if k not in DETAIL_KEYS)
    filled = fill_metrics(report, rows)
    if filled:
        emulation.setdefault("notes", []).append(
            "computed by revati from per-request data (bench did not report them): " + ", ".join(filled))
    slo = slo_attainment(spec_slo, report)
    if slo:
        report["slo_attainment"] = slo
    report["emulation"] = emulation
    return report


def write_requests(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def _fmt(v: Any, spec: str = "<10.2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def summary_table(report: dict) -> str:
    """The terminal summary in the layout of `vllm bench serve`, then the emulation lines."""
    r = report
    e = r.get("emulation", {})
    line = "{:<40} {!s:<10}"
    out = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    if r.get("outcome") == "failed":  # a process died or hung (revati/run/faults.py)
        out.append(f"RUN FAILED: {(r.get('failure') or {}).get('message')}")
        out.append(f"Metrics: {r.get('metrics_scope')}")
    out.append(line.format("Successful requests:", r.get("completed")))
    out.append(line.format("Failed requests:", r.get("failed", 0)))
    if r.get("max_concurrency") is not None:
        out.append(line.format("Maximum request concurrency:", r["max_concurrency"]))
    rate = r.get("request_rate")
    if rate not in (None, "inf") and not (isinstance(rate, float) and math.isinf(rate)):
        out.append(line.format("Request rate configured (RPS):", _fmt(rate)))
    basis = "virtual" if e.get("timewarp") else "wall"
    out.append(line.format(f"Benchmark duration (s, {basis}):", _fmt(r.get("duration"))))
    out.append(line.format("Total input tokens:", r.get("total_input_tokens")))
    out.append(line.format("Total generated tokens:", r.get("total_output_tokens")))
    out.append(line.format("Request throughput (req/s):", _fmt(r.get("request_throughput"))))
    if r.get("request_goodput") is not None:
        out.append(line.format("Request goodput (req/s):", _fmt(r.get("request_goodput"))))
    out.append(line.format("Output token throughput (tok/s):", _fmt(r.get("output_throughput"))))
    if r.get("max_output_tokens_per_s") is not None:
        out.append(line.format("Peak output token throughput (tok/s):", _fmt(r.get("max_output_tokens_per_s"))))
    if r.get("max_concurrent_requests") is not None:
        out.append(line.format("Peak concurrent requests:", _fmt(r.get("max_concurrent_requests"))))
    out.append(line.format("Total token throughput (tok/s):", _fmt(r.get("total_token_throughput"))))
    for m, name, header in (("ttft", "TTFT", "Time to First Token"),
                            ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
                            ("itl", "ITL", "Inter-token Latency"), ("e2el", "E2EL", "End-to-end Latency")):
        out.append("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        out.append(line.format(f"Mean {name} (ms):", _fmt(r.get(f"mean_{m}_ms"))))
        out.append(line.format(f"Median {name} (ms):", _fmt(r.get(f"median_{m}_ms"))))
        for p in ("p90", "p99"):
            out.append(line.format(f"P{p[1:]} {name} (ms):", _fmt(r.get(f"{p}_{m}_ms"))))
    for s in r.get("slo_attainment", []):
        out.append(line.format(f"SLO {s['metric']} <= {s['target_ms']:g}:",
                               f"{'met' if s['met'] else 'MISSED'} ({_fmt(s['actual_ms'], '.1f')})"))
    out.append("{s:{c}^{n}}".format(s=" Emulation ", n=50, c="-"))
    out.append(line.format("Virtual GPU:", f"{e.get('num_gpus', '?')} x {e.get('gpu_name', e.get('gpu'))}"))
    out.append(line.format("Model:", e.get("model")))
    topo = e.get("topology", {})
    out.append(line.format("TP x PP x replicas:", f"{topo.get('tensor_parallel_size')} x "
                           f"{topo.get('pipeline_parallel_size')} x {topo.get('replicas')}"
                           + (" (round-robin router)" if topo.get("router") else "")))
    out.append(line.format("Time warp:", "on" if e.get("timewarp") else "OFF (latencies are this CPU's wall time)"))
    out.append(line.format("Virtual s / wall s / speedup:",
                           f"{_fmt(e.get('virtual_s'), '.1f')} / {_fmt(e.get('wall_s'), '.1f')} / "
                           f"{_fmt(e.get('speedup'), '.2f')}x"))
    out.append(line.format("Clock jumps:", _fmt(e.get("jumps"), "d") if e.get("jumps") is not None else "-"))
    if e.get("jit_freezes"):
        out.append(line.format("Clock frozen for JIT:", f"{e['jit_freezes']} Triton compiles/loads, "
                                                        f"{_fmt(e.get('jit_frozen_wall_s'), '.1f')} wall s"))
    dil = e.get("dilation")
    if e.get("dilation_effective") is not None and dil != e.get("dilation_effective"):
        dil = f"{dil} (used {e['dilation_effective']:g})"
    out.append(line.format("Dilation:", dil))
    if e.get("host_contention"):
        cf = e.get("contention_factor") or {}
        extra = (f", {e.get('host_cores')} cores, clock slowed {cf.get('mean_factor', 1):.2f}x on average"
                 if e["host_contention"] == "compensate" and cf else "")
        out.append(line.format("Host contention:", f"{e['host_contention']}{extra}"))
    pred = e.get("predictor", {})
    out.append(line.format("Predictor:", f"{pred.get('source')} (shim cache hit rate "
                                         f"{_fmt(pred.get('shim_cache_hit_rate'), '.2%')}, coverage "
                                         f"{_fmt(pred.get('coverage'), '.1%')})"))
    out.append(line.format("Predictor fallbacks:", f"{pred.get('fallbacks_total', 0)} {pred.get('fallbacks') or ''}"))
    if pred.get("physics_clamps"):
        out.append(line.format("Physics clamps:", f"{sum(pred['physics_clamps'].values())} {pred['physics_clamps']}"))
    out.append("=" * 50)
    return "\n".join(out)
