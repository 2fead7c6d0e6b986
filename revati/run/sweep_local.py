"""`revati sweep FILE`: an EmulationSweep run on this machine, without a cluster.

The same YAML the operator accepts (revati.spec.sweep): `expand()` lists the children,
each child is one `revati run` of its spec, and `rank()` (the operator's) turns their
results into the ranking. Each child runs as its own `revati run CHILD --out DIR`
subprocess (`run_child`), in turn or `--parallel N` at once. NOTE: a subprocess, not
`orchestrator.run` in this process: a run owns its process (signal handlers that unwind it,
a rich live display of which one console holds one at a time) and its Timekeeper's busy
loop would share one GIL with the others', so two runs in one process would disturb each
other's clocks.

The sweep folder OUT (default runs/<metadata.name>):

| path | what |
|---|---|
| `sweep.yaml` | the validated sweep, every default filled in |
| `<child>/child.yaml` | the child's EmulatedDeployment, the spec its run was given |
| `<child>/run.log` | the child's `revati run` output |
| `<child>/...` | the child's run: report.json, requests.jsonl, logs, plots (docs/run.md) |
| `sweep-state.json` | per child: phase (Running, Succeeded, Failed, Interrupted), exit code, reason, times |
| `sweep.json` | rank()'s result (children, cheapest, pareto, ranking, progress), phase, per-child folder |
| `pareto.png` | cost per hour against p99 TTFT and TPOT, and output throughput against p99 TTFT |
| `calibration.json` | the one `dilation: auto` calibration its children share (below) |

One calibration: `emulation.dilation: auto` (the default) times a reference workload at the
start of each run, and on a loaded host two such readings differ by up to ±15%
(docs/fidelity.md, "Run-to-run spread"), which would enter the ranking as noise. The sweep
calibrates once, before its first child, keeps the result in calibration.json (a resumed sweep
reuses it) and hands it to every child whose spec says auto (REVATI_DILATION_AUTO); each
report's `dilation_how` says so. A child that pins a number keeps its number.

Resuming (running the same command again): a child whose folder holds a complete
report.json for the same child spec is not rerun, and neither is one the state file lists as
Failed with the same spec (unless retry_failed); every other child (never started,
interrupted, spec changed since) has its folder removed and runs from scratch.

A child's phase follows `revati run`'s exit code: Succeeded when every request completed,
Failed otherwise (requests failed, the server did not start ...). rank() ranks Succeeded
children only, so a failed child is listed as failed and never as the cheapest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import ValidationError

from revati import envs
from revati.spec.crds import status_from_report
from revati.spec.load import _field
from revati.spec.sweep import FINISHED, Child, EmulationSweep, expand, rank

STATE_NAME = "sweep-state.json"
RESULT_NAME = "sweep.json"
PLOT_NAME = "pareto.png"
CHILD_SPEC_NAME = "child.yaml"
CHILD_LOG_NAME = "run.log"
CALIBRATION_NAME = "calibration.json"
#: The variable that hands the sweep's calibration to its children (revati/envs.py).
SHARED_DILATION = "REVATI_DILATION_AUTO"
#: Seconds a stopped child's `revati run` has to stop its servers before it is killed.
STOP_GRACE_S = 120.0

#: runner(spec_path, out_dir, log_path, stop) -> exit code of `revati run` (130: stopped).
Runner = Callable[[Path, Path, Path, threading.Event], int]


class SweepFileError(ValueError):
    """A sweep file that cannot run. Each line names the field and what is wrong."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"invalid sweep {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def load_sweep(path: str | os.PathLike) -> EmulationSweep:
    """Reads and validates an EmulationSweep YAML (or JSON). Raises SweepFileError."""
    p = Path(path)
    if not p.is_file():
        raise SweepFileError(str(p), ["file does not exist"])
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepFileError(str(p), [f"not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise SweepFileError(str(p), ["(top level): must be a mapping with apiVersion, kind, metadata and spec"])
    if data.get("kind") == "EmulatedDeployment":
        raise SweepFileError(str(p), ["kind: this is an EmulatedDeployment, which `revati run` runs; a sweep's "
                                      "kind is EmulationSweep (docs/sweep.md)"])
    try:
        return EmulationSweep.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see docs/sweep.md)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(f"{_field(err['loc'])}: {msg}")
        raise SweepFileError(str(p), problems) from None


# -- the runner ---------------------------------------------------------------------------


def run_child(spec_path: Path, out: Path, log_path: Path, stop: threading.Event) -> int:
    """`revati run SPEC_PATH --out OUT`, its output in log_path: the sweep's one call of the runner.

    The run leads its own process group; when stop is set it gets SIGTERM (it unwinds and
    stops every process it started, as on Ctrl-C) and STOP_GRACE_S to exit.
    Returns its exit code (0: every request completed; 130: interrupted).
    """
    from revati.launch.processes import kill_tree

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "revati.cli", "run", str(spec_path), "--out", str(out)],
                                stdout=log, stderr=subprocess.STDOUT, process_group=0)
        try:
            while True:
                try:
                    return proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
                if stop.is_set():
                    kill_tree(proc, grace_s=STOP_GRACE_S, leader_only=True)
                    return proc.returncode
        finally:
            if proc.poll() is None:
                kill_tree(proc, grace_s=STOP_GRACE_S, leader_only=True)


# -- children's results -------------------------------------------------------------------


def read_report(out: Path) -> dict | None:
    """The child's report.json when it is complete (valid JSON with its emulation block), else None."""
    try:
        rep = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rep, dict) or not isinstance(rep.get("emulation"), dict) or "completed" not in rep:
        return None
    return rep


def report_phase(rep: dict) -> str:
    """Succeeded when every request completed and none failed (`revati run`'s exit code 0)."""
    n = (rep.get("emulation", {}).get("load_generator") or {}).get("num_prompts")
    if rep.get("outcome") == "failed":  # a process died or hung: never a result, however cheap
        return "Failed"
    return "Succeeded" if rep.get("completed") == n and not rep.get("failed") else "Failed"


def _requests_failed(rep: dict) -> str:
    if rep.get("outcome") == "failed":
        return f"{(rep.get('failure') or {}).get('message', 'a process of the deployment failed')}; " \
               f"{rep.get('metrics_scope', '')}"
    return f"{rep.get('failed', '?')} request(s) failed, {rep.get('completed', '?')} completed"


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def absolute_paths(spec: dict, base_dir: Path) -> dict:
    """The spec with a relative trace dataset path made absolute against base_dir (the sweep
    file's folder; `revati run` reads it relative to the child spec's folder otherwise)."""
    ds = (spec.get("workload") or {}).get("dataset") or {}
    if ds.get("type") == "trace" and ds.get("path") and not Path(ds["path"]).is_absolute():
        ds["path"] = str((base_dir / ds["path"]).resolve())
    return spec


@dataclass
class SweepResult:
    """What run_sweep did: the ranking (rank()'s result plus phase and folders) and its files."""

    result: dict
    out: Path
    interrupted: bool = False
    files: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(c.get("phase") == "Succeeded" for c in self.result["children"]) else 1


class _State:
    """sweep-state.json: each child's phase, exit code and reason, rewritten atomically."""

    def __init__(self, path: Path, sweep: str):
        self.path = path
        self.lock = threading.Lock()
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        self.children: dict[str, dict] = old.get("children", {}) if isinstance(old, dict) else {}
        self.sweep = sweep

    def set(self, name: str, **entry: Any) -> None:
        with self.lock:
            self.children[name] = {k: v for k, v in entry.items() if v is not None}
            by_phase = {p: sorted(n for n, e in self.children.items() if e.get("phase") == p)
                        for p in ("Succeeded", "Failed", "Running", "Interrupted")}
            body = {"sweep": self.sweep, "updated": _now(), "done": by_phase["Succeeded"],
                    "failed": by_phase["Failed"], "running": by_phase["Running"],
                    "interrupted": by_phase["Interrupted"], "children": self.children}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(body, indent=1, default=str))
            os.replace(tmp, self.path)


def shared_dilation(out: Path, children: list[Child]) -> dict | None:
    """The sweep's one `dilation: auto` calibration ({"dilation", "how"}), read from
    calibration.json or measured now and written there; None when no child says auto."""
    if not any((c.spec.get("emulation") or {}).get("dilation", "auto") == "auto" for c in children):
        return None
    path = out / CALIBRATION_NAME
    try:
        v = json.loads(path.read_text())
        if float(v["dilation"]) > 0 and v["how"]:
            return v
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from revati.timekeeper.calibrate import auto_dilation

    d, how = auto_dilation()
    v = {"dilation": d, "how": f"{how}; calibrated once at the sweep's start ({_now()}) for all its children "
                               f"({path})", "calibratedAt": _now()}
    path.write_text(json.dumps(v, indent=1) + "\n")
    return v


def _child_status(out: Path) -> str:
    """What a running child is doing, from its folder (for the progress display)."""
    from revati.launch.bench import START_MARK, parse_progress

    try:
        text = (out / "bench.log").read_bytes()
    except OSError:
        return "starting the server"
    if START_MARK not in text:
        return "warming up the load generator"
    p = parse_progress(text.split(START_MARK, 1)[1].decode(errors="replace"))
    return f"requests {p[0]}/{p[1]}" if p else "requests 0"


# -- the sweep ----------------------------------------------------------------------------


def run_sweep(sweep: EmulationSweep, out: Path, *, base_dir: Path | None = None, parallel: int = 1,
              retry_failed: bool = False, runner: Runner | None = None, console=None) -> SweepResult:
    """Runs the children not done yet, `parallel` at a time, and writes the ranking.

    Args:
        sweep: the validated sweep (load_sweep).
        out: the sweep folder (see the module docstring).
        base_dir: the sweep file's folder, for relative trace dataset paths (default: cwd).
        parallel: children running at once.
        retry_failed: rerun the children the state file lists as Failed.
        runner: runs one child (default run_child; tests inject a fake).
    Returns the SweepResult; on Ctrl-C (KeyboardInterrupt) the running children are stopped,
    recorded as Interrupted, and the ranking of what finished is written (interrupted=True).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    runner = runner or run_child
    base_dir = Path(base_dir or Path.cwd())
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json", exclude_none=True),
                                                   sort_keys=False))
    children = expand(sweep)
    bodies = {c.name: {**c.body, "spec": absolute_paths(json.loads(json.dumps(c.spec)), base_dir)} for c in children}
    state = _State(out / STATE_NAME, sweep.metadata.name)
    reports: dict[str, dict | None] = {}
    phases: dict[str, str] = {}

    todo: list[Child] = []
    for c in children:
        d = out / c.name
        entry = state.children.get(c.name) or {}
        same_spec = _read_yaml(d / CHILD_SPEC_NAME) == bodies[c.name]
        rep = read_report(d) if same_spec else None
        # NOTE: a rerun empties the folder first, so a report there is of this spec.
        if rep is not None and not (retry_failed and report_phase(rep) == "Failed"):
            phases[c.name], reports[c.name] = report_phase(rep), rep
            if entry.get("phase") not in FINISHED:  # finished before the state file said so
                state.set(c.name, **{**entry, "phase": phases[c.name], "params": c.params,
                                     "reason": _requests_failed(rep) if phases[c.name] == "Failed" else None})
            continue
        if same_spec and entry.get("phase") == "Failed" and not retry_failed:
            phases[c.name], reports[c.name] = "Failed", None
            continue
        todo.append(c)
    skipped = len(children) - len(todo)
    if skipped:
        console.print(f"revati sweep: {skipped} of {len(children)} children finished in an earlier run "
                      f"({out / STATE_NAME}); {len(todo)} to run")

    stop = threading.Event()
    interrupted = False

    def one(c: Child) -> tuple[int, float]:
        d = out / c.name
        shutil.rmtree(d, ignore_errors=True)  # a half-finished run starts from scratch
        d.mkdir(parents=True)
        (d / CHILD_SPEC_NAME).write_text(yaml.safe_dump(bodies[c.name], sort_keys=False))
        t0 = time.monotonic()
        state.set(c.name, phase="Running", params=c.params, startedAt=_now())
        try:
            rc = runner(d / CHILD_SPEC_NAME, d, d / CHILD_LOG_NAME, stop)
        except Exception as e:  # noqa: BLE001 - e.g. OSError starting it: this child fails, the sweep goes on
            with open(d / CHILD_LOG_NAME, "a") as log:
                log.write(f"revati sweep: the child's run could not be run: {e!r}\n")
            rc = 1
        return rc, time.monotonic() - t0

    def finish(c: Child, rc: int, wall_s: float) -> None:
        d = out / c.name
        rep = read_report(d)
        started = (state.children.get(c.name) or {}).get("startedAt")
        if stop.is_set() and rc != 0:
            phases.pop(c.name, None)
            state.set(c.name, phase="Interrupted", params=c.params, rc=rc, startedAt=started, finishedAt=_now())
            console.print(f"revati sweep: {c.name} interrupted; it reruns from scratch next time")
            return
        if rc == 0 and rep is None:
            phase, reason = "Failed", f"revati run exited 0 without a complete report.json; see {d / CHILD_LOG_NAME}"
        elif rc == 0:
            phase, reason = "Succeeded", None
        elif rep is not None:
            phase, reason = "Failed", _requests_failed(rep)
        else:
            tail = _tail(d / CHILD_LOG_NAME)
            last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "no output")
            phase, reason = "Failed", f"revati run exited {rc}: {last} (see {d / CHILD_LOG_NAME}):\n{tail}"
        phases[c.name], reports[c.name] = phase, rep
        state.set(c.name, phase=phase, params=c.params, rc=rc, reason=reason, startedAt=started,
                  finishedAt=_now(), wallSeconds=round(wall_s, 1))
        first = (reason or "").split("\n", 1)[0]
        console.print(f"revati sweep: {c.name} ({_params(c.params)}): {phase} after {wall_s:.0f} s"
                      + (f": {first}" if first else ""), highlight=False)

    calibration = shared_dilation(out, todo) if todo else None
    saved = envs.get(SHARED_DILATION)
    if calibration is not None:
        console.print(f"revati sweep: dilation auto = {calibration['dilation']:.3f} for every child that says auto "
                      f"(one calibration: {out / CALIBRATION_NAME})", highlight=False)
        # the children's `revati run` processes inherit it (run_child)
        os.environ[SHARED_DILATION] = json.dumps({k: calibration[k] for k in ("dilation", "how")})
    try:
        if todo:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[status]}"), console=console) as bar:
                overall = bar.add_task(f"[bold]sweep {sweep.metadata.name}", total=len(children),
                                       completed=skipped, status="")
                tasks: dict[str, Any] = {}
                pending = list(todo)
                running: dict[Future, Child] = {}
                pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="sweep-child")
                try:
                    while pending or running:
                        while pending and len(running) < max(1, parallel):
                            c = pending.pop(0)
                            running[pool.submit(one, c)] = c
                            tasks[c.name] = bar.add_task(f"  {c.name}", total=None, status=_params(c.params))
                        done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                        for f in done:
                            c = running.pop(f)
                            rc, wall_s = f.result()
                            bar.remove_task(tasks.pop(c.name))
                            finish(c, rc, wall_s)
                            bar.advance(overall)
                        for f, c in running.items():
                            bar.update(tasks[c.name], status=f"{_params(c.params)}: {_child_status(out / c.name)}")
                except KeyboardInterrupt:
                    interrupted = True
                    stop.set()
                    console.print(f"revati sweep: interrupted; stopping {len(running)} running child(ren)")
                    for f, c in running.items():
                        finish(c, *f.result())
                finally:
                    pool.shutdown(wait=True)
    finally:
        if calibration is not None:
            if saved is None:
                os.environ.pop(SHARED_DILATION, None)
            else:
                os.environ[SHARED_DILATION] = saved

    result = ranking(sweep, children, phases, reports, out, state, interrupted=interrupted)
    (out / RESULT_NAME).write_text(json.dumps(result, indent=1, default=str))
    files = [RESULT_NAME, STATE_NAME, "sweep.yaml"]
    from revati.run import plots

    if plots.write_sweep_plot(out / PLOT_NAME, result["children"], result["pareto"], sweep.spec.effective_slo(),
                              (result.get("cheapest") or {}).get("name")):
        files.append(PLOT_NAME)
    return SweepResult(result, out, interrupted, files)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _value(v: Any) -> str:
    """A grid value as the table shows it: an `engine` block by its engine (and version), other
    blocks as compact JSON, scalars as they are."""
    if isinstance(v, dict) and isinstance(v.get("name"), str):
        return v["name"] + (f" {v['version']}" if v.get("version") else "")
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items())


def ranking(sweep: EmulationSweep, children: list[Child], phases: dict[str, str], reports: dict[str, dict | None],
            out: Path, state: _State | None = None, *, interrupted: bool = False) -> dict:
    """rank()'s result over the children's results, as the operator's sweep status, plus
    phase (Succeeded: every child finished; Incomplete: some did not run), the sweep's name,
    and per child its folder (dir), for a failed child the reason, and interrupted: true for a
    child stopped by an interruption."""
    rows = []
    for c in children:
        row: dict[str, Any] = {"name": c.name, "params": c.params}
        if c.name in phases:
            row["phase"] = phases[c.name]
            rep = reports.get(c.name)
            if rep is not None:
                row["metrics"] = status_from_report(rep)["metrics"]
        rows.append(row)
    ranked = rank(sweep.spec, rows)
    entries = (state.children if state else {})
    for row in ranked["children"]:
        row["dir"] = str(out / row["name"])
        entry = entries.get(row["name"]) or {}
        if row.get("phase") == "Failed" and entry.get("reason"):
            row["reason"] = entry["reason"]
        if "phase" not in row and entry.get("phase") == "Interrupted":
            row["interrupted"] = True
    finished = all(c.name in phases for c in children)
    return {"sweep": sweep.metadata.name, "phase": "Succeeded" if finished else "Incomplete",
            "interrupted": interrupted, **ranked}


# -- the table ----------------------------------------------------------------------------


def _ms(metrics: dict | None, metric: str) -> str:
    v = ((metrics or {}).get(metric) or {}).get("p99")
    return "-" if v is None else f"{v:.1f}"


def table(result: dict, grid_paths: list[str]):
    """A rich Table of the children: ranked first (rank()'s order), then failed, then not run."""
    from rich.table import Table

    rows = {r["name"]: r for r in result["children"]}
    order = result["ranking"] + [n for n in rows if n not in result["ranking"]]
    cheapest = (result.get("cheapest") or {}).get("name")
    t = Table(title=f"sweep {result['sweep']}: {result['progress']} children finished; cheapest meeting "
                    f"the SLO: {cheapest or 'none'}")
    t.add_column("#", justify="right")
    t.add_column("child")
    for p in grid_paths:
        t.add_column(p)
    t.add_column("phase")
    for name in ("GPUs", "$/h", "TTFT p99 ms", "TPOT p99 ms", "out tok/s"):
        t.add_column(name, justify="right")
    t.add_column("SLO")
    t.add_column("Pareto")
    for name in order:
        r = rows[name]
        m = r.get("metrics") or {}
        pos = result["ranking"].index(name) + 1 if name in result["ranking"] else None
        phase = r.get("phase") or ("interrupted" if r.get("interrupted") else "not run")
        thr = m.get("outputThroughput")
        style = "bold green" if name == cheapest else ("red" if phase == "Failed" else None)
        t.add_row("-" if pos is None else str(pos), name, *(_value(r["params"].get(p)) for p in grid_paths), phase,
                  str(r.get("gpus", "-")), "-" if r.get("costPerHour") is None else f"{r['costPerHour']:.2f}",
                  _ms(m, "ttftMs"), _ms(m, "tpotMs"), "-" if thr is None else f"{thr:.1f}",
                  ("met" if r.get("meetsSlo") else "missed") if phase == "Succeeded" else "-",
                  "*" if name in result["pareto"] else "", style=style)
    return t


# -- command line -------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """Exit code: 0 every child Succeeded, 1 some failed, 2 an invalid sweep file, 130 interrupted."""
    try:
        sweep = load_sweep(args.file)
    except SweepFileError as e:
        print(f"revati sweep: {e}", file=sys.stderr)
        return 2
    if args.parallel < 1:
        print("revati sweep: --parallel must be at least 1", file=sys.stderr)
        return 2

    def interrupt(signum, _frame):  # SIGTERM/SIGHUP unwind like Ctrl-C: every child run is stopped
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see cmd_run: also when started ignored
    out = Path(args.out or Path("runs") / sweep.metadata.name)
    try:
        res = run_sweep(sweep, out, base_dir=Path(args.file).resolve().parent, parallel=args.parallel,
                        retry_failed=args.retry_failed)
    except KeyboardInterrupt:  # a second Ctrl-C while the children were stopping
        print(f"revati sweep: interrupted; {out / STATE_NAME} lists what finished", file=sys.stderr)
        return 130
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(table(res.result, sorted(sweep.spec.grid)))
    for row in res.result["children"]:
        if row.get("reason"):
            print(f"{row['name']}: {row['reason'].splitlines()[0]}")
    print(f"revati sweep: wrote {', '.join(res.files)} to {res.out}"
          + ("; interrupted: run the same command again to resume" if res.interrupted else ""))
    return res.exit_code
