"""`revati run SPEC`: one emulated deployment under load, and its report.

Starts, locally and all under the emulator: the Timekeeper (when spec.emulation.timewarp),
per replica a prediction sidecar and `vllm serve` (TP/PP from the spec, --load-format dummy),
a round-robin router when replicas > 1, and the real `vllm bench serve` (revati.run.loadgen).
Every child leads its own process group and is killed with it on success, failure and
Ctrl-C (SIGINT/SIGTERM raise KeyboardInterrupt here, which unwinds the context managers).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from revati import models
from revati.catalog import get_gpu
from revati.emulator import emulator_env, format_summary, merge_trace, start_governor, summarize_stats
from revati.run import loadgen, plots, report
from revati.serving import VENV_BIN, ServerFailed, _kill_tree, free_port, served_model, tail, vllm_server
from revati.spec.schema import EmulatedDeployment


class RunFailed(RuntimeError):
    pass


@dataclass
class Progress:
    """What the bench log says so far."""

    done: int = 0
    total: int = 0
    started_wall: float | None = None   # "Starting main benchmark run..." seen
    finished_wall: float | None = None  # the result table seen
    started_virtual_ns: int | None = None
    finished_virtual_ns: int | None = None


_TQDM = re.compile(r"(\d+)/(\d+) \[")


def parse_progress(text: str) -> tuple[int, int] | None:
    """The last tqdm count (done, total) in a bench log."""
    last = None
    for m in _TQDM.finditer(text[-4000:]):
        last = m
    return (int(last.group(1)), int(last.group(2))) if last else None


@contextmanager
def router(backends: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """The round-robin router as its own process (group), under the emulator's clock."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "revati.run.router", "--port", str(port), *backends],
                            env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RunFailed(f"the router exited ({proc.returncode}); see {log_path}:\n{tail(log_path)}")
            try:
                with urllib.request.urlopen(url + "/revati/router", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RunFailed(f"the router did not answer in {timeout_s:.0f} s; see {log_path}")
                time.sleep(0.3)
        yield url
    finally:
        try:
            with urllib.request.urlopen(url + "/revati/router", timeout=2) as r:
                (log_path.parent / "router.json").write_text(r.read().decode())
        except OSError:
            pass
        _kill_tree(proc, grace_s=5)
        log.close()


def resolve_dilation(spec: EmulatedDeployment) -> tuple[float, str]:
    """(dilation, how it was obtained). `auto` times the reference workload here against the
    target host's reference (revati/timekeeper/calibrate.py), once per run."""
    d = spec.spec.emulation.dilation
    if d != "auto":
        return float(d), f"dilation {float(d):g}, given in the spec"
    from revati.timekeeper.calibrate import auto_dilation

    return auto_dilation()


@dataclass
class ServePlan:
    """How every replica of a spec is served: shared by `revati run` and `revati role replica`."""

    model: str                 # what `vllm serve` is given (catalog id or a local config folder)
    tokenizer: str             # what the load generator tokenizes with
    serve_args: list[str]      # every `vllm serve` flag after the model, emulator's included
    emulator_args: list[str]   # the flags the emulator adds (reported)
    per_replica: int           # GPUs per replica (TP x PP)


def serve_plan(s) -> ServePlan:
    """The model folder/tokenizer and `vllm serve` flags of a DeploymentSpec's replicas."""
    resolved = models.resolve(s.model)
    tokenizer = str(resolved.tokenizer or resolved.model)
    serve_args = [*(["--tokenizer", str(resolved.tokenizer)] if resolved.tokenizer else []),
                  "--tensor-parallel-size", str(s.tensorParallelSize),
                  "--pipeline-parallel-size", str(s.pipelineParallelSize),
                  *s.engine.cli_args()]
    given = set(s.engine.args)
    emulator_args: list[str] = []
    # The engine drains and exits on SIGTERM instead of being force-killed, so every process's
    # shim writes its final stats (the report's predictor figures) at exit.
    if "shutdown-timeout" not in given:
        emulator_args += ["--shutdown-timeout", "10"]
    if s.tensorParallelSize > 1 and "disable-custom-all-reduce" not in given:
        emulator_args.append("--disable-custom-all-reduce")
    serve_args += emulator_args
    return ServePlan(str(resolved.model), tokenizer, serve_args, emulator_args,
                     s.tensorParallelSize * s.pipelineParallelSize)


def spec_notes(spec: EmulatedDeployment, emulator_args: list[str]) -> list[str]:
    """The report notes that follow from the spec alone."""
    s = spec.spec
    em = s.emulation
    notes: list[str] = []
    if em.dilation == "auto" and not em.timewarp:
        notes.append("dilation has no effect without the time warp")
    if not em.timewarp:
        notes.append("time warp OFF: every latency and throughput below is measured on this machine's "
                     "wall clock; it includes the CPU time of the real vLLM stack running here and the "
                     "predicted GPU time is not substituted for it. Do not read them as GPU predictions.")
    if "--disable-custom-all-reduce" in emulator_args:
        notes.append("TP > 1: vLLM's custom all-reduce is off (--disable-custom-all-reduce, added by the "
                     "emulator: its IPC buffers and device flags are not emulated); all-reduces go through "
                     "NCCL and are timed by the collective predictor")
    if s.replicas > 1:
        notes.append(f"{s.replicas} replicas behind revati's round-robin HTTP router (no health checks, "
                     "no load awareness); each replica has its own sidecar and virtual node")
    return notes


def deployment_block(s, plan: ServePlan, lp: loadgen.LoadPlan) -> dict:
    """The report's description of what was emulated (a part of its emulation block)."""
    return {
        "gpu": s.gpu, "gpu_name": get_gpu(s.gpu).name, "num_gpus": plan.per_replica * s.replicas,
        "model": s.model,
        "topology": {"tensor_parallel_size": s.tensorParallelSize, "pipeline_parallel_size": s.pipelineParallelSize,
                     "replicas": s.replicas, "router": s.replicas > 1},
        "engine_args": s.engine.cli_args(),
        "emulator_engine_args": plan.emulator_args,
        "load_generator": {"tool": "vllm bench serve", "dataset": lp.dataset, "num_prompts": lp.num_prompts,
                           "command": "vllm bench serve " + " ".join(lp.args)},
    }


def bench_env(gpu: str, timewarp, seed: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `vllm bench serve` under the emulator."""
    env = emulator_env(gpu, timewarp=timewarp, base=base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONHASHSEED"] = str(seed)  # timed_trace seeds prompt tokens from hash(str)
    return env


@dataclass
class RunResult:
    report: dict
    out: Path
    files: list[str] = field(default_factory=list)


def run(spec: EmulatedDeployment, out: Path, *, spec_path: Path | None = None, console=None,
        startup_timeout_s: float = 1500.0, bench_timeout_s: float = 3 * 3600) -> RunResult:
    """Runs the spec and writes the report into out. Raises RunFailed / ServerFailed / WorkloadError."""
    from rich.console import Console

    console = console or Console(stderr=True)
    s = spec.spec
    em = s.emulation
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("stats*.json"), *out.glob("steps*.jsonl"), out / "bench.json"]:
        old.unlink(missing_ok=True)
    spec_dir = spec_path.parent if spec_path else Path.cwd()
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    sp = serve_plan(s)
    tokenizer = sp.tokenizer
    gpu = get_gpu(s.gpu)
    per_replica = sp.per_replica
    serve_args = sp.serve_args
    emulator_args = sp.emulator_args
    # Validate the workload before anything starts (model name and URL are filled in below).
    loadgen.plan(s, base_url="http://-", model="-", tokenizer=tokenizer, result_dir=out, spec_dir=spec_dir)

    notes: list[str] = []
    timekeeper = governor = None
    dilation, dilation_how = resolve_dilation(spec) if em.timewarp else (None, None)
    if em.timewarp:
        from revati.timekeeper.timekeeper import Timekeeper

        notes.append(dilation_how)
        console.print(f"revati run: {dilation_how}")
        timekeeper = Timekeeper(dilation=dilation).start()
        if em.hostContention == "compensate":
            governor = start_governor(timekeeper)
    timewarp = timekeeper if timekeeper is not None else False
    notes += spec_notes(spec, emulator_args)

    sidecar_stats: list[dict] = [{} for _ in range(s.replicas)]
    step_logs = [out / f"steps.replica{i}.jsonl" for i in range(s.replicas)]
    traces = [out / ("trace.json" if s.replicas == 1 else f"trace.replica{i}.json") for i in range(s.replicas)] \
        if em.trace else [None] * s.replicas
    prog = Progress()
    t_start = time.monotonic()
    t_ready = None
    bench_rc = None
    try:
        with ExitStack() as stack:
            urls = []
            for i in range(s.replicas):
                console.print(f"revati run: replica {i}: vllm serve {s.model} on {per_replica} virtual "
                              f"{gpu.name} (TP {s.tensorParallelSize}, PP {s.pipelineParallelSize}); "
                              f"log {out / f'server.replica{i}.log'}")
                env_extra = {"REVATI_STEP_LOG": str(step_logs[i]), "REVATI_NODE_NAME": f"replica{i}"}
                server = stack.enter_context(vllm_server(
                    sp.model, gpu=s.gpu, serve_args=serve_args, log_path=out / f"server.replica{i}.log",
                    env_extra=env_extra, predictor=em.predictor, trace=traces[i],
                    stats=str(out / "stats"), startup_timeout_s=startup_timeout_s,
                    sidecar_stats=sidecar_stats[i], timewarp=timewarp))
                urls.append(server.url)
            t_ready = time.monotonic()
            console.print(f"revati run: {s.replicas} replica(s) ready after {t_ready - t_start:.0f} s")
            url = urls[0]
            if s.replicas > 1:
                url = stack.enter_context(router(urls, emulator_env(s.gpu, timewarp=timewarp, offline_hub=False),
                                                 out / "router.log"))
            name = served_model(urls[0])
            lp = loadgen.plan(s, base_url=url, model=name, tokenizer=tokenizer, result_dir=out, spec_dir=spec_dir)
            lp.write_dataset(out / loadgen.TRACE_NAME)
            notes += lp.notes
            (out / "bench.cmd").write_text("vllm bench serve " + " ".join(lp.args) + "\n")
            bench_rc = _run_bench(lp, s.gpu, timewarp, out, prog, console, timekeeper, bench_timeout_s, s.workload.seed)
    finally:
        if governor is not None:
            governor.stop()
        if timekeeper is not None:
            timekeeper.stop()
    t_end = time.monotonic()
    if bench_rc != 0:
        raise RunFailed(f"vllm bench serve failed ({bench_rc}); see {out / 'bench.log'}:\n{tail(out / 'bench.log')}")
    bench = json.loads((out / "bench.json").read_text())

    # ---- the report
    rows = report.per_request(bench)
    total_stats = summarize_stats(out / "stats")  # every process of every replica: stats.<pid>.json
    sc = _add_sidecar(sidecar_stats)
    wall_s = (prog.finished_wall - prog.started_wall) if prog.started_wall and prog.finished_wall else None
    virtual_s = bench.get("duration")
    trace_events = {}
    for t in traces:
        if t is not None:
            trace_events[t.name] = merge_trace(t)
    emulation = {
        "timewarp": em.timewarp,
        "latency_clock": "virtual (Timekeeper)" if em.timewarp else "wall clock of this machine (time warp off)",
        "virtual_s": virtual_s,
        "wall_s": wall_s,
        "speedup": (virtual_s / wall_s) if virtual_s and wall_s else None,
        "setup_wall_s": (t_ready - t_start) if t_ready else None,
        "total_wall_s": t_end - t_start,
        "jumps": timekeeper.stats.jumps if timekeeper else None,
        "jumped_s": timekeeper.stats.jumped_ns / 1e9 if timekeeper else None,
        # the clock stood still while vLLM JIT-compiled (or loaded) a Triton kernel on first use
        "jit_freezes": timekeeper.stats.freezes if timekeeper else None,
        "jit_frozen_wall_s": timekeeper.stats.frozen_ns / 1e9 if timekeeper else None,
        # the clock held while the shim asked the prediction sidecar (emulator work, not target work)
        "predictor_holds": timekeeper.stats.holds if timekeeper else None,
        "predictor_held_wall_s": timekeeper.stats.held_ns / 1e9 if timekeeper else None,
        "dilation": em.dilation,
        "dilation_effective": dilation,
        "dilation_how": dilation_how,
        "host_contention": em.hostContention if em.timewarp else None,
        "host_cores": governor.cores if governor else None,
        "contention_factor": {**governor.stats.as_dict(), "measure": governor.mode} if governor else None,
        "shim_steps": total_stats.get("steps"),
        "graph_launches": total_stats.get("graph_launches"),
        "predictor": {
            "source": em.predictor,
            "duration_source": total_stats.get("duration_source"),
            "shim_cache_hit_rate": total_stats.get("hit_rate"),
            "coverage": total_stats.get("coverage"),
            "unmapped_ops": total_stats["predictor"].get("unmapped_ops", 0),
            "sidecar_ops": sc.get("ops"),
            "sidecar_hit_rate": sc.get("hit_rate"),
            "fallbacks_total": sc.get("fallbacks_total") if sc else None,
            "fallbacks": sc.get("fallbacks") if sc else None,
            # predictions the physics guard raised to their bound (a bug of their source)
            "physics_clamps": sc.get("physics_clamps") if sc else None,
        },
        "predicted_gpu_ms_by_family": {k: v / 1e6 for k, v in sorted(total_stats["family_ns"].items(),
                                                                       key=lambda kv: -kv[1]) if v},
        "predicted_gpu_ms_by_kind": {k: v / 1e6 for k, v in total_stats["busy_ns"].items() if v},
        **deployment_block(s, sp, lp),
        "trace": trace_events or None,
        "versions": report.versions(),
        "notes": notes,
    }
    if s.replicas > 1 and (out / "router.json").exists():
        emulation["topology"]["router_requests"] = json.loads((out / "router.json").read_text()).get("requests")
    rep = report.build_report(bench, rows, emulation, s.slo)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    report.write_requests(out / "requests.jsonl", rows)
    starts = [x for x in bench.get("start_times") or [] if x is not None]
    files = ["report.json", "spec.resolved.yaml", "requests.jsonl"]
    pngs = plots.write_plots(out, rows, step_logs, min(starts) if starts else None,
                             "virtual time" if em.timewarp else "wall time, time warp off")
    if not pngs:
        rep["emulation"]["notes"].append("no PNG plots: matplotlib is not installed")
        (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    files += pngs + list(trace_events)
    console.print(format_summary(total_stats, sc), highlight=False, markup=False)
    return RunResult(rep, out, files)


def _run_bench(lp: loadgen.LoadPlan, gpu: str, timewarp, out: Path, prog: Progress, console, timekeeper,
               timeout_s: float, seed: int) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn

    env = bench_env(gpu, timewarp, seed)
    log_path = out / "bench.log"
    prog.total = lp.num_prompts
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "vllm"), "bench", "serve", *lp.args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, process_group=0)
        try:
            with Bar(TextColumn("[bold]requests"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[clock]}"), console=console, transient=False) as bar:
                task = bar.add_task("bench", total=lp.num_prompts, clock="starting vllm bench serve")
                deadline = time.monotonic() + timeout_s
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise RunFailed(f"vllm bench serve ran past {timeout_s:.0f} s")
                    _poll(log_path, prog, timekeeper)
                    bar.update(task, completed=prog.done, clock=_clock_text(prog, timekeeper))
                    time.sleep(0.2)  # wall_s is read from the log at this granularity
                _poll(log_path, prog, timekeeper)
                bar.update(task, completed=prog.done, clock=_clock_text(prog, timekeeper))
            return proc.returncode
        finally:
            _kill_tree(proc, grace_s=5)


def _poll(log_path: Path, prog: Progress, timekeeper) -> None:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return
    now = time.monotonic()
    vnow = timekeeper.now_ns() if timekeeper is not None else None
    if prog.started_wall is None and "Starting main benchmark run" in text:
        prog.started_wall, prog.started_virtual_ns = now, vnow
    if prog.started_wall is not None:
        main_part = text.split("Starting main benchmark run", 1)[1]
        p = parse_progress(main_part)
        if p:
            prog.done = p[0]
    if prog.finished_wall is None and "Serving Benchmark Result" in text:
        prog.finished_wall, prog.finished_virtual_ns = now, vnow


def _clock_text(prog: Progress, timekeeper) -> str:
    if prog.started_wall is None:
        return "preparing the dataset"
    end = prog.finished_wall or time.monotonic()
    wall = end - prog.started_wall
    if timekeeper is not None:
        vend = prog.finished_virtual_ns or timekeeper.now_ns()
        virt = (vend - prog.started_virtual_ns) / 1e9
        return f"virtual {virt:.1f} s | wall {wall:.1f} s | {virt / wall if wall > 0 else 0:.2f}x"
    return f"wall {wall:.1f} s (time warp off: virtual = wall)"


def _add_sidecar(per_replica: list[dict]) -> dict:
    out: dict = {"ops": 0, "fallbacks_total": 0, "fallbacks": {}, "physics_clamps": {}}
    hits = 0
    for st in per_replica:
        pred = st.get("predictor", {})
        out["ops"] += pred.get("ops", 0)
        hits += pred.get("hit_rate", 0) * pred.get("ops", 0)
        out["fallbacks_total"] += pred.get("fallbacks_total", 0)
        for fam, n in (pred.get("physics_clamps") or {}).items():
            out["physics_clamps"][fam] = out["physics_clamps"].get(fam, 0) + n
        for fam, reasons in (pred.get("fallbacks") or {}).items():
            for r, n in reasons.items():
                out["fallbacks"].setdefault(fam, {})
                out["fallbacks"][fam][r] = out["fallbacks"][fam].get(r, 0) + n
    out["hit_rate"] = hits / out["ops"] if out["ops"] else None
    out["predictor"] = {"fallbacks_total": out["fallbacks_total"], "fallbacks": out["fallbacks"]}
    return out if any(per_replica) else {}
