"""`revati run SPEC`: the local runner. One emulated deployment under load, and its report.

Starts, locally and all under the emulator: the Timekeeper (when spec.emulation.timewarp),
per replica a prediction sidecar and the engine's server (TP/PP from the spec, dummy weights),
a round-robin router when replicas > 1, and the engine's load generator (revati.run.loadgen).
What runs, and with which flags, is the deployment plan (revati.run.plan), which the pod runner
(revati.run.roles) shares. Every child leads its own process group and is killed with it on
success, failure and Ctrl-C (SIGINT/SIGTERM raise KeyboardInterrupt here, which unwinds the
context managers).

A process of the deployment that dies or hangs ends the run (revati/run/faults.py): the
watchdog kills the rest at once, the load generator has a few seconds to write what finished,
and run() writes report.json with "outcome": "failed" and raises DeploymentFault.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from revati import engines, envs
from revati.catalog import get_gpu
from revati.engines import EngineAdapter
from revati.launch import bench
from revati.launch.env import emulator_env
from revati.launch.processes import Server, ServerFailed, free_port, served, tail
from revati.launch.sidecar import prediction_sidecar
from revati.launch.stats import format_summary, summarize_stats
from revati.launch.trace import merge_trace
from revati.run import faults, ledger, loadgen, plots, report, startup
from revati.run.plan import DeploymentPlan, ServePlan, bench_env, serve_plan  # noqa: F401 (re-exported)
from revati.spec.schema import EmulatedDeployment


class RunFailed(RuntimeError):
    pass


class DeploymentFault(RunFailed):
    """A process of the deployment died or hung (`revati run` exits faults.FAULT_EXIT_CODE).
    report.json, written already, has "outcome": "failed"; the message says which process."""

    def __init__(self, fault: faults.Fault, report: dict, out: Path):
        super().__init__(fault.message())
        self.fault, self.report, self.out = fault, report, out


@contextmanager
def local_server(model: str, *, gpu: str = "h100-sxm", serve_args: list[str] | None = None,
                 port: int | None = None, log_path: Path, env_extra: dict[str, str] | None = None,
                 predictor: str | None = None, trace: str | None = None, stats: str | None = None,
                 startup_timeout_s: float = 1500.0, sidecar_stats: dict | None = None, timewarp=False,
                 engine: EngineAdapter | None = None, progress: startup.StartupProgress | None = None,
                 replica: int | None = None, watch: faults.Watchdog | None = None) -> Iterator[Server]:
    """Runs the engine's server for `model` (dummy weights) under the emulator until it is healthy.

    Unless another predictor is named, a prediction sidecar serves the trained models for the
    server's process tree; its counters land in sidecar_stats when the server stops.
    timewarp goes to emulator_env: False, True, or a Timekeeper shared with the load generator.
    progress: the run's start-up display, told of each phase (`replica` names the server there).
    watch: the watchdog follows the sidecar from its start, the server (and its engine core and
    workers) once it serves.
    """
    engine = engine or engines.get()
    counters: dict = {}
    with ExitStack() as stack:
        endpoint = None
        if predictor in (None, "sidecar"):
            if progress is not None:
                progress.enter("sidecar", replica)
            on_start = (lambda p, log: watch.add(p.pid, "sidecar", log_path=log)) if watch else None
            endpoint, counters = stack.enter_context(prediction_sidecar(gpu, log_path.parent / "sidecar",
                                                                        on_start=on_start))
        port = port or free_port()
        env = emulator_env(gpu, predictor=predictor, trace=trace, stats=stats, sidecar=endpoint,
                           timewarp=timewarp, engine=engine)
        env.update(env_extra or {})
        cmd = engine.serve_command(model, host="127.0.0.1", port=port, serve_args=serve_args or [])
        if progress is not None:
            progress.watch(log_path, replica)
            progress.enter("engine_start", replica)
        try:
            server = stack.enter_context(served(cmd, env, url=f"http://127.0.0.1:{port}", probe=engine.health_path,
                                                log_path=log_path, what=f"{engine.name} serve",
                                                startup_timeout_s=startup_timeout_s))
        except ServerFailed as e:
            # NOTE: the engine's own end is the fault, recorded before the teardown of this
            # context stops the sidecar (whose exit the watchdog would otherwise name first)
            if watch is not None and e.returncode is not None:
                watch.exited(e.pid, "api", e.returncode, log_path)
            raise
        if progress is not None:
            progress.ready()
        if watch is not None:
            watch.add(server.pid, "api", log_path=log_path, tree=engine)
        yield server
    if sidecar_stats is not None:
        sidecar_stats.update(counters)


@contextmanager
def router(backends: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 60.0,
           watch: faults.Watchdog | None = None) -> Iterator[str]:
    """The round-robin router as its own process (group), under the emulator's clock."""
    port = free_port()
    cmd = [sys.executable, "-m", "revati.run.router", "--port", str(port), *backends]
    with served(cmd, env, url=f"http://127.0.0.1:{port}", probe="/revati/router", log_path=log_path,
                what="the router", startup_timeout_s=timeout_s, poll_s=0.3, stop_grace_s=5,
                leader_only=False) as server:
        if watch is not None:
            watch.add(server.pid, "router", log_path=log_path)
        try:
            yield server.url
        finally:
            try:
                with urllib.request.urlopen(server.url + "/revati/router", timeout=2) as r:
                    (log_path.parent / "router.json").write_text(r.read().decode())
            except OSError:
                pass


def resolve_dilation(spec: EmulatedDeployment) -> tuple[float, str]:
    """(dilation, how it was obtained). `auto` times the reference workload here against the
    target host's reference (revati/timekeeper/calibrate.py), once per run, unless
    REVATI_DILATION_AUTO gives the number (a local sweep's one calibration for all its children).

    Raises:
        ValueError: REVATI_DILATION_AUTO is set but is not {"dilation": d > 0, "how": text}.
    """
    d = spec.spec.emulation.dilation
    if d != "auto":
        return float(d), f"dilation {float(d):g}, given in the spec"
    shared = envs.get("REVATI_DILATION_AUTO")
    if shared:
        try:
            v = json.loads(shared)
            value, how = float(v["dilation"]), str(v["how"])
        except (ValueError, KeyError, TypeError):
            value, how = 0.0, ""
        if not value > 0 or not how:
            raise ValueError(f'REVATI_DILATION_AUTO must be {{"dilation": d > 0, "how": text}}, not {shared!r}')
        return value, how
    from revati.timekeeper.calibrate import auto_dilation

    return auto_dilation()


@dataclass
class RunResult:
    report: dict
    out: Path
    files: list[str] = field(default_factory=list)


def run(spec: EmulatedDeployment, out: Path, *, spec_path: Path | None = None, console=None,
        startup_timeout_s: float = 1500.0, bench_timeout_s: float = 3 * 3600) -> RunResult:
    """Runs the spec and writes the report into out. Raises RunFailed / ServerFailed / WorkloadError,
    and EngineInstallError when the spec's engine version is missing and cannot be installed."""
    from rich.console import Console

    console = console or Console(stderr=True)
    s = spec.spec
    em = s.emulation
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("stats*.json"), *out.glob("steps*.jsonl"), out / "bench.json"]:
        old.unlink(missing_ok=True)
    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    plan = DeploymentPlan.of(spec, spec_path.parent if spec_path else None)
    sp = plan.serve
    gpu = get_gpu(s.gpu)
    plan.check_load(out)  # the workload is validated before anything starts
    # NOTE: a version other than the one beside revati runs from its own environment, installed
    # here on first use, before anything starts: found missing later, inside the server's start,
    # the error unwound the sidecar first, and the watchdog reported that exit (SidecarCrashed)
    # instead of it (`revati validate --engine-version V` of a version not installed yet).
    plan.engine.prepare()

    progress = startup.StartupProgress(console, plan.engine)  # the environment phase starts now
    notes: list[str] = []
    timekeeper = governor = None
    watch = faults.Watchdog(clock=lambda: timekeeper.now_ns() / 1e9 if timekeeper is not None else time.monotonic(),
                            waits=lambda: timekeeper.describe_actors() if timekeeper is not None else [])
    dilation, dilation_how = resolve_dilation(spec) if em.timewarp else (None, None)
    if em.timewarp:
        from revati.timekeeper.governor import start_for
        from revati.timekeeper.timekeeper import Timekeeper

        notes.append(dilation_how)
        console.print(f"revati run: {dilation_how}")
        timekeeper = Timekeeper(dilation=dilation, on_deadlock=watch.deadlock).start()
        watch.watch_timekeeper(timekeeper)
        if em.hostContention == "compensate":
            governor = start_for(timekeeper)
    timewarp = timekeeper if timekeeper is not None else False
    notes += plan.notes()

    sidecar_stats: list[dict] = [{} for _ in range(s.replicas)]
    step_logs = [out / f"steps.replica{i}.jsonl" for i in range(s.replicas)]
    traces = [out / ("trace.json" if s.replicas == 1 else f"trace.replica{i}.json") for i in range(s.replicas)] \
        if em.trace else [None] * s.replicas
    t_start = time.monotonic()
    t_ready = None
    load = lp = None
    bench_pid: list[int] = []
    watch.start()
    try:
        with ExitStack() as stack:
            stack.enter_context(progress)
            try:
                urls = []
                for i in range(s.replicas):
                    console.print(f"revati run: replica {i}: {plan.engine.name} serve {s.model} on {sp.per_replica} "
                                  f"virtual {gpu.name} (TP {s.tensorParallelSize}, PP {s.pipelineParallelSize}); "
                                  f"log {out / f'server.replica{i}.log'}")
                    env_extra = {"REVATI_STEP_LOG": str(step_logs[i]), "REVATI_NODE_NAME": f"replica{i}"}
                    server = stack.enter_context(local_server(
                        sp.model, gpu=s.gpu, serve_args=sp.serve_args, log_path=out / f"server.replica{i}.log",
                        env_extra=env_extra, predictor=em.predictor, trace=traces[i],
                        stats=str(out / "stats"), startup_timeout_s=startup_timeout_s,
                        sidecar_stats=sidecar_stats[i], timewarp=timewarp, engine=plan.engine, progress=progress,
                        replica=i, watch=watch))
                    urls.append(server.url)
                t_ready = time.monotonic()
                console.print(f"revati run: {s.replicas} replica(s) ready after {t_ready - t_start:.0f} s")
                url = urls[0]
                if s.replicas > 1:
                    progress.enter("router")
                    url = stack.enter_context(router(urls, emulator_env(s.gpu, timewarp=timewarp, offline_hub=False,
                                                                        engine=plan.engine),
                                                     out / "router.log", watch=watch))
                lp = plan.load(base_url=url, model=plan.engine.served_model(urls[0]), result_dir=out)
                notes += lp.notes
                command = plan.start_load(lp, out)
                progress.finish()  # one live display at a time: the load's bar follows
                ledger.name_os_threads()
                load = _run_bench(command, lp, bench_env(s.gpu, timewarp, s.workload.seed, engine=plan.engine),
                                  out, console, timekeeper, bench_timeout_s, watch, bench_pid, progress=progress)
                if load.rc != 0:  # the load generator died (its exit is its own end otherwise)
                    watch.exited(bench_pid[0] if bench_pid else None, "loadgen", load.rc, out / "bench.log")
            finally:
                watch.stop()  # before the teardown below: the exits from here on are due
    except Exception:
        if watch.fault is None:
            raise
    finally:
        watch.stop()
        if governor is not None:
            governor.stop()
        if timekeeper is not None:
            hung = watch.fault is not None and watch.fault.kind == "timekeeper"
            timekeeper.stop(join_s=0.5 if hung else 5.0)
        left = watch.reap()
        if left:
            console.print(f"revati run: killed what the teardown left: {', '.join(left)}")
    t_end = time.monotonic()
    if watch.fault is not None:
        _fault_report(watch.fault, plan, lp, out, notes, s, timekeeper, governor, dilation, dilation_how,
                      step_logs, t_end - t_start, t_ready - t_start if t_ready else None)
    if load.rc != 0 or load.bench is None:
        raise RunFailed(f"vllm bench serve failed ({load.rc}); see {out / 'bench.log'}:\n{tail(out / 'bench.log')}")

    # ---- the report
    rows = report.per_request(load.bench)
    total_stats = summarize_stats(out / "stats")  # every process of every replica: stats.<pid>.json
    sc = _add_sidecar(sidecar_stats)
    trace_events = {t.name: merge_trace(t) for t in traces if t is not None}
    router_requests = None
    if s.replicas > 1 and (out / "router.json").exists():
        router_requests = json.loads((out / "router.json").read_text()).get("requests")
    emulation = report.EmulationReport(
        plan, lp, latency_clock="virtual (Timekeeper)" if em.timewarp else "wall clock of this machine (time warp off)",
        virtual_s=load.bench.get("duration"), wall_s=load.wall_s, total_wall_s=t_end - t_start, notes=notes,
        setup_wall_s=(t_ready - t_start) if t_ready else None,
        clock=report.ClockFacts(timekeeper, governor, dilation, dilation_how),
        shim_stats=total_stats, sidecar_stats=sc, trace=trace_events, router_requests=router_requests,
        extra={"startup": progress.phases()}).block()
    rep = report.build_report(load.bench, rows, emulation, s.slo)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    report.write_requests(out / "requests.jsonl", rows)
    starts = [x for x in load.bench.get("start_times") or [] if x is not None]
    files = ["report.json", "spec.resolved.yaml", "requests.jsonl"]
    pngs = plots.write_plots(out, rows, step_logs, min(starts) if starts else None,
                             "virtual time" if em.timewarp else "wall time, time warp off")
    if not pngs:
        rep["emulation"]["notes"].append("no PNG plots: matplotlib is not installed")
        (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    files += pngs + list(trace_events)
    console.print(format_summary(total_stats, sc), highlight=False, markup=False)
    return RunResult(rep, out, files)


def _fault_report(fault: faults.Fault, plan: DeploymentPlan, lp: loadgen.LoadPlan | None, out: Path,
                  notes: list[str], s, timekeeper, governor, dilation, dilation_how, step_logs: list[Path],
                  total_wall_s: float, setup_wall_s: float | None) -> None:
    """report.json and requests.jsonl of a run that a fault ended, then DeploymentFault."""
    bench_json = out / "bench.json"
    try:
        bench_result = json.loads(bench_json.read_text()) if bench_json.exists() else None
    except ValueError:
        bench_result = None
    rows = faults.cut_rows(bench_result, fault.virtual_s)
    lp = lp or plan.load(base_url="http://-", model="-", result_dir=out)
    try:
        shim_stats = summarize_stats(out / "stats")
    except Exception:  # noqa: BLE001 - killed processes leave partial stats: the report goes without them
        shim_stats = None
    notes = [*notes, f"the run FAILED: {fault.headline()}"]
    emulation = report.EmulationReport(
        plan, lp, latency_clock="virtual (Timekeeper)" if s.emulation.timewarp else "wall clock of this machine",
        virtual_s=None, wall_s=None, total_wall_s=total_wall_s, notes=notes, setup_wall_s=setup_wall_s,
        clock=report.ClockFacts(timekeeper, governor, dilation, dilation_how), shim_stats=shim_stats).block()
    rep = faults.failed_report(bench_result, rows, lp.num_prompts, emulation, fault, s.slo)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    report.write_requests(out / "requests.jsonl", rows)
    raise DeploymentFault(fault, rep, out)


def _run_bench(command: list[str], lp: loadgen.LoadPlan, env: dict[str, str], out: Path, console, timekeeper,
               timeout_s: float, watch: faults.Watchdog | None = None,
               pid: list[int] | None = None, progress: startup.StartupProgress | None = None) -> bench.BenchRun:
    """The load generator with a progress bar: requests done, and the virtual and wall clocks.
    progress gets the load generator's start and the load as phases when the bar sees them.
    The watchdog follows it for hangs (its exit status is run_bench's); pid gets its pid."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn

    def clocks() -> tuple[float, float | None]:
        return time.monotonic(), (timekeeper.now_ns() / 1e9 if timekeeper is not None else None)

    with Bar(TextColumn("[bold]requests"), BarColumn(), MofNCompleteColumn(),
             TextColumn("{task.fields[clock]}"), console=console, transient=False) as bar:
        task = bar.add_task("bench", total=lp.num_prompts, clock="starting vllm bench serve")

        t_popen = time.monotonic()
        recorded: set[str] = set()

        def tick(prog: bench.Progress) -> None:
            bar.update(task, completed=prog.done, clock=_clock_text(prog, clocks))
            if progress is not None and prog.started is not None and "load_start" not in recorded:
                recorded.add("load_start")
                progress.record("load_start", t_popen, prog.started[0])
            if progress is not None and prog.finished is not None and "load" not in recorded:
                recorded.add("load")
                progress.record("load", prog.started[0], prog.finished[0])
            if watch is not None and prog.started is not None and watch.load_started is None:
                watch.load_started = prog.started[1] if prog.started[1] is not None else prog.started[0]

        def started(proc) -> None:
            if pid is not None:
                pid.append(proc.pid)
            if watch is not None:
                watch.add(proc.pid, "loadgen", log_path=out / "bench.log", deaths=False, drain=True)

        try:
            return bench.run_bench(command, env, out, timeout_s, clocks=clocks, total=lp.num_prompts,
                                   on_tick=tick, on_start=started)
        except bench.BenchTimeout as e:
            raise RunFailed(str(e)) from None


def _clock_text(prog: bench.Progress, clocks) -> str:
    if prog.started is None:
        return "preparing the dataset"
    wall_end, virt_end = prog.finished or clocks()
    wall = wall_end - prog.started[0]
    if prog.started[1] is not None:
        virt = virt_end - prog.started[1]
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
