"""`revati role ...`: the commands the Kubernetes operator's pods run.

The operator (issue 6, /tmp/k8s/CONTRACT.md) spreads what `revati run` runs on one machine over
pods; each pod runs one piece of it, with the same code paths as `revati run`:

- `revati role replica --spec FILE --replica I --port 8000` (the replica pods' `engine`
  container): prepares the model folder and tokenizer (the offline hub), builds the serve
  command line of `revati run` (the deployment plan, revati.run.plan: the same flags, bound to
  0.0.0.0) and execs it. The pod sets LD_PRELOAD and REVATI_* (the operator renders them with
  revati.launch.env, the builder this role completes them with); the relay sidecar container
  provides the clock page at REVATI_CLOCK and the predictor at REVATI_SIDECAR, so no
  Timekeeper or sidecar starts here.
- `revati role router --port 8000 --backends URL,...`: the round-robin router of `revati run`
  (revati.run.router) on 0.0.0.0.
- `revati role loadgen --spec FILE --target URL [--out DIR]`: waits for the target's /health,
  plans the load as `revati run` does (revati.run.plan), runs `vllm bench serve`, builds
  the report with revati.run.report (the parts a pod knows), writes report.json and requests.jsonl into --out, prints the
  summary table and, as its LAST stdout line, `REVATI_REPORT <compact report JSON>` (no
  per-request rows), which the operator reads from the pod log.

Clocks: inside a pod under the time warp, this process runs under the shim too, so
time.monotonic() is virtual. Wall-clock spans and every timeout here use CLOCK_TAI, which the
shim leaves real (shim/src/libc.c: virtual_delta).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from revati.launch.bench import BenchRun, BenchTimeout
from revati.launch.bench import run_bench as run_load

DEFAULT_OUT = "/tmp/revati-results"
REPORT_PREFIX = "REVATI_REPORT "
#: The REVATI_REPORT line stays under this many bytes (the operator reads it from the pod log).
REPORT_LINE_LIMIT = 1 << 20


class RoleError(RuntimeError):
    """A role cannot do its job; the message says why (printed, exit status 1 or 2)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def wall_s() -> float:
    """Real seconds, also under the time-warp shim (CLOCK_TAI is not virtualized)."""
    return time.clock_gettime(time.CLOCK_TAI)


def load(spec_path: str | os.PathLike):
    """The EmulatedDeployment at spec_path, or RoleError(code 2) naming what is wrong."""
    from revati.spec import SpecError, load_spec

    try:
        return load_spec(spec_path)
    except SpecError as e:
        raise RoleError(str(e), code=2) from None


# ---------------------------------------------------------------------------- replica


def _check_replica(spec, replica: int) -> None:
    n = spec.spec.replicas
    if not 0 <= replica < n:
        raise RoleError(f"--replica {replica} is out of range: spec.replicas is {n} (replicas 0..{n - 1})", code=2)


def replica_command(spec, replica: int, *, port: int = 8000, host: str = "0.0.0.0") -> list[str]:
    """The serve command line of replica `replica`: `revati run`'s, on host:port."""
    _check_replica(spec, replica)
    return deployment_plan(spec).serve_command(host=host, port=port)


def replica_env(spec, replica: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the replica's server: the pod's, completed as `revati run` does
    (revati.launch.env.emulator_env: shim library paths, engine switches, the offline hub, the
    predictor). The clock (REVATI_TIMEWARP, REVATI_CLOCK) and the sidecar endpoint
    (REVATI_SIDECAR) are the pod's."""
    from revati import engines
    from revati.launch.env import emulator_env
    from revati.launch.paths import ShimNotBuiltError

    s = spec.spec
    em = s.emulation
    base = dict(os.environ if base is None else base)
    sidecar = None
    if em.predictor in (None, "sidecar"):
        sidecar = base.get("REVATI_SIDECAR")
        if not sidecar:
            raise RoleError("spec.emulation.predictor is 'sidecar' but REVATI_SIDECAR is not set: the pod's "
                            "sidecar container provides the predictor (e.g. ipc:///run/revati/sidecar.sock)")
    else:
        base.pop("REVATI_SIDECAR", None)  # as `revati run`: another predictor, no sidecar
    check_timewarp_env(spec, base)
    try:
        env = emulator_env(s.gpu, predictor=em.predictor, sidecar=sidecar, base=base,
                           engine=engines.get(s.engine.name, s.engine.version))
    except (KeyError, ShimNotBuiltError) as e:
        raise RoleError(str(e.args[0] if e.args else e)) from None
    env.setdefault("REVATI_NODE_NAME", f"replica{replica}")
    return env


def check_timewarp_env(spec, env: dict[str, str]) -> None:
    """The pod's clock must be the one the spec asks for."""
    on = env.get("REVATI_TIMEWARP", "0") not in ("", "0")
    if spec.spec.emulation.timewarp and not (on and env.get("REVATI_CLOCK")):
        raise RoleError("spec.emulation.timewarp is true but the pod does not set REVATI_TIMEWARP=1 and "
                        "REVATI_CLOCK (the clock page the relay sidecar creates)", code=2)
    if on and not spec.spec.emulation.timewarp:
        raise RoleError("REVATI_TIMEWARP=1 is set but spec.emulation.timewarp is false", code=2)


def deployment_plan(spec, spec_dir: Path | None = None):
    """The spec's revati.run.plan.DeploymentPlan, with an unknown model as a RoleError."""
    from revati.models import UnknownModelError
    from revati.run.plan import DeploymentPlan

    try:
        return DeploymentPlan.of(spec, spec_dir)
    except (UnknownModelError, FileNotFoundError, ValueError) as e:
        raise RoleError(f"spec.model: {e}", code=2) from None


def wait_for_clock_page(path: str | os.PathLike, timeout_s: float) -> None:
    """Waits until the clock page at path exists and is complete (its magic is written last)."""
    from revati.timekeeper.clock_page import MAGIC, PAGE_SIZE, ClockPage

    path = Path(path)
    deadline = wall_s() + timeout_s
    while True:
        try:
            if path.stat().st_size >= PAGE_SIZE:
                page = ClockPage(path)
                try:
                    if page.get("magic") == MAGIC:
                        return
                finally:
                    page.close()
        except (OSError, ValueError):
            pass
        if wall_s() > deadline:
            raise RoleError(f"REVATI_TIMEWARP=1 but the clock page {path} did not appear in {timeout_s:g} s: "
                            "the pod's relay sidecar (revati sidecar --relay ...) creates it once it reaches "
                            "the deployment's coordinator; check the sidecar container's log and the "
                            "coordinator Service")
        time.sleep(0.2)


def wait_for_ipc(endpoint: str, timeout_s: float) -> None:
    """Waits until an ipc:// endpoint's socket file exists (other transports: no wait)."""
    if not endpoint.startswith("ipc://"):
        return
    path = Path(endpoint[len("ipc://"):])
    deadline = wall_s() + timeout_s
    while not path.exists():
        if wall_s() > deadline:
            raise RoleError(f"the prediction sidecar's socket {path} (REVATI_SIDECAR) did not appear in "
                            f"{timeout_s:g} s; check the pod's sidecar container")
        time.sleep(0.2)


def replica_main(spec_path: str, replica: int, port: int, *, host: str = "0.0.0.0", wait_timeout_s: float = 600.0,
                 execvpe: Callable = os.execvpe) -> int:
    spec = load(spec_path)
    _check_replica(spec, replica)
    cmd = replica_command(spec, replica, port=port, host=host)
    env = replica_env(spec, replica)
    if env.get("REVATI_TIMEWARP", "0") not in ("", "0"):
        wait_for_clock_page(env["REVATI_CLOCK"], wait_timeout_s)
    if env.get("REVATI_SIDECAR") and env.get("REVATI_PREDICTOR") == "sidecar":
        wait_for_ipc(env["REVATI_SIDECAR"], wait_timeout_s)
    s = spec.spec
    print(f"revati role replica: replica {replica} of {s.replicas}: {s.model} on "
          f"{s.tensorParallelSize * s.pipelineParallelSize} virtual {s.gpu} (TP {s.tensorParallelSize}, "
          f"PP {s.pipelineParallelSize})\nrevati role replica: exec {' '.join(cmd)}", flush=True)
    execvpe(cmd[0], cmd, env)
    return 0  # only when execvpe is a stand-in


# ---------------------------------------------------------------------------- router


def parse_backends(text: str) -> list[str]:
    backends = [b.strip() for b in text.split(",") if b.strip()]
    if not backends:
        raise RoleError("--backends: give at least one URL (comma-separated)", code=2)
    for b in backends:
        if not b.startswith(("http://", "https://")):
            raise RoleError(f"--backends: {b!r} is not an http(s):// URL", code=2)
    return backends


def router_main(port: int, backends: list[str], host: str = "0.0.0.0") -> int:
    from revati.run import router

    return router.main(["--host", host, "--port", str(port), *backends])


# ---------------------------------------------------------------------------- loadgen


def wait_healthy(url: str, timeout_s: float, probe: str = "/health") -> None:
    """Waits until url+probe (the engine's health probe) answers 200."""
    deadline = wall_s() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + probe, timeout=5) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if wall_s() > deadline:
            raise RoleError(f"the target {url} did not answer {probe} with 200 in {timeout_s:g} s "
                            f"(last: {last}); are the router and every replica Ready?")
        time.sleep(1.0)


def router_counts(url: str) -> list[int] | None:
    """Requests per backend, when the target is revati's router."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/revati/router", timeout=5) as r:
            return json.loads(r.read()).get("requests")
    except (OSError, ValueError):
        return None


def run_bench(args: list[str], env: dict[str, str], out: Path, timeout_s: float,
              command: list[str] | None = None) -> BenchRun:
    """Runs `vllm bench serve ARGS` (or command + ARGS), echoing its lines to stdout and into
    out/bench.log; its result is out/bench.json.

    The load phase runs from bench's "Starting main benchmark run" to its result table, on the
    wall clock (CLOCK_TAI) and on this process's time.monotonic() (virtual under the shim)."""
    from revati import engines

    command = [*command, *args] if command else engines.get().bench_command(args)
    try:
        return run_load(command, env, out, timeout_s, clocks=lambda: (wall_s(), time.monotonic()), echo=True,
                        deadline_clock=wall_s)
    except BenchTimeout as e:
        raise RoleError(f"{e} (wall)") from None


def pod_report(plan, bench: dict, run: BenchRun, lp, *, target: str, notes: list[str],
               total_wall_s: float | None, router_requests: list[int] | None) -> dict:
    """report.json of the loadgen pod: `revati run`'s report with what a pod knows.

    The metrics and SLO attainment are built exactly as `revati run` builds them, and so is the
    emulation block, less what only the one-machine run knows (the Timekeeper's stats, the shim
    statistics of the replicas, the predictor's counters, the trace): those keys are left out."""
    from revati.run import report

    notes = list(notes)
    notes.append("Kubernetes: the loadgen pod's report. virtual_s is bench's duration (virtual under the time "
                 "warp); wall_s is the load phase on the pod's wall clock (CLOCK_TAI, which the shim leaves "
                 "real), load_phase_virtual_s the same span on its virtual clock. Not in a pod's report: "
                 "the Timekeeper's stats (jumps, dilation and host-contention factor: the coordinator owns "
                 "them), the replicas' shim statistics and predictor counters, the trace and the plots")
    s = plan.spec.spec
    em = s.emulation
    if em.trace:
        notes.append("spec.emulation.trace is set but traces are not collected from pods")
    emulation = report.EmulationReport(
        plan, lp, latency_clock=("virtual (the the deployment's coordinator, relayed to every pod)" if em.timewarp
                                 else "wall clock of the loadgen pod (time warp off)"),
        virtual_s=bench.get("duration"), wall_s=run.wall_s, total_wall_s=total_wall_s, notes=notes,
        router_requests=router_requests,
        extra={"platform": "kubernetes", "pod": os.environ.get("HOSTNAME"), "target": target,
               "load_phase_virtual_s": run.virtual_s}).block()
    return report.build_report(bench, report.per_request(bench), emulation, s.slo)


def _finite(o):
    """JSON-safe: non-finite floats become "inf"/"-inf"/None (strict JSON has no Infinity)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def report_line(rep: dict, limit: int = REPORT_LINE_LIMIT) -> str:
    """`REVATI_REPORT <compact JSON>`, under limit bytes (strict JSON, no per-request rows)."""
    from revati.run.report import DETAIL_KEYS

    def dump(d: dict) -> str:
        return REPORT_PREFIX + json.dumps(_finite(d), separators=(",", ":"), default=str, allow_nan=False)

    rep = {k: v for k, v in rep.items() if k not in DETAIL_KEYS}
    line = dump(rep)
    if len(line.encode()) <= limit:
        return line
    # Too big (a huge emulation block): keep the metrics and the small emulation keys.
    e = {k: v for k, v in rep.get("emulation", {}).items()
         if len(json.dumps(_finite(v), default=str)) <= 4096}
    e["truncated"] = "the full report is report.json in the loadgen pod's --out folder"
    slim = {k: v for k, v in rep.items() if k != "emulation" and len(json.dumps(_finite(v), default=str)) <= 4096}
    slim["emulation"] = e
    line = dump(slim)
    if len(line.encode()) > limit:
        raise RoleError(f"the report does not fit in {limit} bytes")
    return line


def loadgen_main(spec_path: str, target: str, out: str | os.PathLike = DEFAULT_OUT, *,
                 health_timeout_s: float = 1800.0, bench_timeout_s: float = 3 * 3600,
                 bench: Callable[[list[str], dict, Path, float], BenchRun] = run_bench) -> int:
    from revati.run import loadgen, report
    from revati.run.plan import bench_env

    t0 = wall_s()
    spec = load(spec_path)
    s = spec.spec
    spec_dir = Path(spec_path).resolve().parent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    (out / "spec.resolved.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    check_timewarp_env(spec, os.environ)
    plan = deployment_plan(spec, spec_dir)
    try:
        plan.check_load(out)  # the workload is validated before waiting on anything (as revati run does)
    except loadgen.WorkloadError as e:
        raise RoleError(f"invalid spec {spec_path}:\n  - {e}", code=2) from None
    print(f"revati role loadgen: waiting for {target}{plan.engine.health_path}", flush=True)
    wait_healthy(target, health_timeout_s, plan.engine.health_path)
    try:
        name = plan.engine.served_model(target)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise RoleError(f"{target}{plan.engine.models_path} did not name the served model: {e}") from None
    lp = plan.load(base_url=target, model=name, result_dir=out)
    plan.start_load(lp, out)
    notes = plan.notes() + list(lp.notes)
    # the pod's REVATI_TIMEWARP/REVATI_CLOCK pass through
    env = bench_env(s.gpu, False, s.workload.seed, engine=plan.engine)
    print(f"revati role loadgen: {plan.engine.load_generator} {' '.join(lp.args)}", flush=True)
    run = bench(lp.args, env, out, bench_timeout_s)
    if run.rc != 0 or run.bench is None:
        from revati.launch.processes import tail

        raise RoleError(f"vllm bench serve failed ({run.rc}); last lines of {out / 'bench.log'}:\n"
                        f"{tail(out / 'bench.log')}")
    rep = pod_report(plan, run.bench, run, lp, target=target, notes=notes, total_wall_s=wall_s() - t0,
                     router_requests=router_counts(target))
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    report.write_requests(out / "requests.jsonl", report.per_request(run.bench))
    line = report_line(rep)
    print(report.summary_table(rep))
    for note in rep["emulation"].get("notes", []):
        print(f"note: {note}")
    print(f"revati role loadgen: wrote report.json, requests.jsonl, spec.resolved.yaml to {out}")
    sys.stderr.flush()
    print(line, flush=True)  # the LAST stdout line: the operator parses it from the pod log
    return 0 if rep.get("completed") == lp.num_prompts and not rep.get("failed") else 1


# ---------------------------------------------------------------------------- command line


def add_parser(sub) -> None:
    """`revati role {replica,router,loadgen}` on the CLI's subparsers."""
    ro = sub.add_parser("role", help="the per-pod commands of the Kubernetes operator (replica, router, loadgen)",
                        description="What `revati run` runs, one piece per pod (see revati/run/roles.py).")
    rsub = ro.add_subparsers(dest="role", required=True)
    r = rsub.add_parser("replica", help="prepare the model and exec the replica's `vllm serve`")
    r.add_argument("--spec", required=True, help="the EmulatedDeployment YAML (the <name>-spec ConfigMap)")
    r.add_argument("--replica", type=int, required=True, help="replica index, 0..spec.replicas-1")
    r.add_argument("--port", type=int, default=8000)
    r.add_argument("--host", default="0.0.0.0")
    r.add_argument("--wait-timeout", type=float, default=600.0,
                   help="seconds to wait for the clock page and the sidecar socket (default 600)")
    r.set_defaults(func=_cmd_replica)
    rt = rsub.add_parser("router", help="the round-robin router in front of the replicas")
    rt.add_argument("--port", type=int, default=8000)
    rt.add_argument("--host", default="0.0.0.0")
    rt.add_argument("--backends", required=True, help="comma-separated replica URLs")
    rt.set_defaults(func=_cmd_router)
    lg = rsub.add_parser("loadgen", help="drive the target with `vllm bench serve` and print the report")
    lg.add_argument("--spec", required=True)
    lg.add_argument("--target", required=True, help="base URL of the router (or a replica)")
    lg.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    lg.add_argument("--health-timeout", type=float, default=1800.0, help="seconds to wait for TARGET/health")
    lg.add_argument("--bench-timeout", type=float, default=3 * 3600.0, help="seconds for vllm bench serve")
    lg.set_defaults(func=_cmd_loadgen)


def _guard(name: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except RoleError as e:
        print(f"revati role {name}: {e}", file=sys.stderr, flush=True)
        return e.code
    except KeyboardInterrupt:
        print(f"revati role {name}: interrupted", file=sys.stderr, flush=True)
        return 130


def _cmd_replica(args: argparse.Namespace) -> int:
    return _guard("replica", lambda: replica_main(args.spec, args.replica, args.port, host=args.host,
                                                  wait_timeout_s=args.wait_timeout))


def _cmd_router(args: argparse.Namespace) -> int:
    return _guard("router", lambda: router_main(args.port, parse_backends(args.backends), host=args.host))


def _cmd_loadgen(args: argparse.Namespace) -> int:
    def interrupt(signum, _frame):  # the Job is deleted: stop bench too
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (see cli.cmd_run)
    return _guard("loadgen", lambda: loadgen_main(args.spec, args.target, args.out,
                                                  health_timeout_s=args.health_timeout,
                                                  bench_timeout_s=args.bench_timeout))
