"""A crash or a hang of a deployment's process is an outcome of the run, never a result.

The Watchdog follows every process a runner starts (the API server and, discovered among its
descendants by the engine adapter's process names, the engine core and the TP/PP workers; the
router, the prediction sidecars, the load generator) and the Timekeeper's loop. The first
fault it sees:

- a death: a process exited (any status: a server must not end on its own) or was killed by a
  signal; its pidfd becomes readable at once. For the runner's own children the status comes
  from waitid(WNOWAIT), which leaves it to the runner to reap; for the engine's descendants from
  the zombie's /proc stat (exit_code), when their parent has not reaped them first;
- a hang: a process stopped (state T or t: SIGSTOP, SIGTSTP, a debugger) for hang_s. A slow
  process runs (R) or waits (S, D) and is left alone; a stopped one can never go on by itself,
  and under the time warp it holds the clock (revati/timekeeper/tasks.py: IDLE_STATES);
- the Timekeeper's loop ending with an exception, or not turning for hang_s;
- a deadlock that the Timekeeper declares (on_deadlock).

It then records the fault (which process, its status, the virtual time, what the Timekeeper's
other actors were waiting on, the last lines of the process's log), SIGKILLs every other
watched process group at once, except the load generator, which gets drain_s to write the
results of the requests that finished before the fault (the servers are gone, so the rest fail
fast; not when the Timekeeper failed: its clock would never end the load generator's waits),
and calls on_fault. The runner's blocked calls (start-up probes, the load generator's
output) then end on their own, and the runner writes a report with "outcome": "failed"
(failed_report): its metrics cover only the requests finished before the fault.
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from revati.launch.processes import tail

if TYPE_CHECKING:
    from revati.engines import EngineAdapter

log = logging.getLogger(__name__)

#: `revati run`'s exit code when a process of the deployment died or hung (report.json:
#: "outcome": "failed"). 3 stays the time warp's deadlock (the pods' DEADLOCK_EXIT_CODE).
FAULT_EXIT_CODE = 4
DEADLOCK_EXIT_CODE = 3
#: Wall seconds a process must stay stopped to be called hung.
HANG_S = 3.0
#: Wall seconds the load generator has, after a fault elsewhere, to write its results.
DRAIN_S = 5.0

#: What each kind of process is called in messages.
KIND_NAMES = {
    "api": "the API server", "engine": "the engine core", "worker": "a TP/PP worker",
    "router": "the router", "loadgen": "the load generator", "sidecar": "the prediction sidecar",
    "timekeeper": "the Timekeeper", "relay": "the relay", "coordinator": "the coordinator",
    "deadlock": "the time warp",
}
#: The condition (the operator's reason) of a crash of each kind; a hang's ends in Hung.
_CONDITION_STEM = {
    "api": "ApiServer", "engine": "Engine", "worker": "Worker", "router": "Router", "loadgen": "Loadgen",
    "sidecar": "Sidecar", "timekeeper": "Timekeeper", "relay": "Relay", "coordinator": "Coordinator",
}
#: Deeper processes die first when a crash spreads up the tree (a worker, then its engine core,
#: then the API server): of faults seen at once, the deepest is the cause.
_DEPTH = {"worker": 0, "engine": 1, "api": 2}


def condition(kind: str, hung: bool = False) -> str:
    """The condition reason of a fault: EngineCrashed, WorkerHung, EmulatedDeadlock ..."""
    if kind == "deadlock":
        return "EmulatedDeadlock"
    return _CONDITION_STEM.get(kind, "Process") + ("Hung" if hung else "Crashed")


def describe_status(si_code: int, status: int) -> str:
    """waitid's (si_code, si_status) in words."""
    if si_code == os.CLD_EXITED:
        return f"exited with status {status}"
    try:
        name = signal.Signals(status).name
    except ValueError:
        name = f"signal {status}"
    dumped = " (core dumped)" if si_code == os.CLD_DUMPED else ""
    return f"killed by {name} (signal {status}){dumped}"


def describe_wait_status(raw: int) -> str:
    """A waitpid-format status (/proc/PID/stat's exit_code) in words."""
    if os.WIFSIGNALED(raw):
        return describe_status(os.CLD_DUMPED if os.WCOREDUMP(raw) else os.CLD_KILLED, os.WTERMSIG(raw))
    return describe_status(os.CLD_EXITED, os.WEXITSTATUS(raw))


def returncode_status(rc: int) -> str:
    """A subprocess returncode (negative: the signal) in words."""
    return describe_status(os.CLD_KILLED, -rc) if rc < 0 else describe_status(os.CLD_EXITED, rc)


@dataclass
class Fault:
    """The first fault of a run; as_dict() is report.json's "failure"."""

    kind: str                   # a KIND_NAMES key
    process: str                # "the engine core (VLLM::EngineCore_DP0, pid 1234)"
    pid: int | None
    status: str                 # "killed by SIGKILL (signal 9)", "stopped (state T) for 3.0 s: hung" ...
    hung: bool
    virtual_s: float | None     # the deployment's clock when it happened (a hang: first seen stopped)
    wall_t: float               # time.monotonic() when it was seen
    log_path: str | None = None
    log_tail: str = ""
    reason: str = ""            # the log's own last error line ("ValueError: ...", "torch.OutOfMemoryError: ...")
    waiting: list[str] = field(default_factory=list)  # what the other actors were waiting on

    @property
    def condition(self) -> str:
        return condition(self.kind, self.hung)

    load_s: float | None = None  # virtual seconds into the load phase, when it had started

    def headline(self) -> str:
        at = f" at virtual time {self.virtual_s:.3f} s" if self.virtual_s is not None else ""
        if self.load_s is not None:
            at += f" ({self.load_s:.3f} s into the load)"
        return f"{self.condition}: {self.process} {self.status}{at}"

    def message(self) -> str:
        lines = [self.headline()]
        if self.reason:
            lines.append(f"Its reason, from its log: {self.reason}")
        if self.hung:
            lines.append("  (stopped, not slow: a slow process runs or waits; a stopped one cannot go on by itself)")
        if self.waiting:
            lines.append("What the other actors were waiting on:")
            lines += ["  " + w for w in self.waiting]
        if self.log_path:
            lines.append(f"Last lines of {self.log_path}:")
            lines += ["  " + x for x in (self.log_tail or "(empty)").splitlines()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("wall_t")
        d["condition"] = self.condition
        d["message"] = self.headline()
        return d


@dataclass(eq=False)
class _Watched:
    pid: int
    kind: str
    name: str                       # "the engine core (VLLM::EngineCore_DP0, pid 12)"
    log_path: Path | None
    child: bool                     # the runner's child: waitid(WNOWAIT) reads its status
    group: bool                     # leads its process group: the group is killed with it
    exits_ok: bool = False          # status 0 is its normal end (the load generator)
    deaths: bool = True             # its exit is a fault (False: its owner reports it)
    drain_s: float = 0.0            # after another's fault, killed this much later
    tree: "EngineAdapter | None" = None  # discover its descendants by the adapter's names
    pidfd: int = -1
    created: float | None = None
    stopped_since: tuple[float, float | None] | None = None  # (wall, virtual) first seen stopped


class Watchdog:
    """Watches a deployment's processes; see the module docstring.

    Args:
        clock: the deployment's clock in seconds (the Timekeeper's virtual time, else monotonic).
        waits: what the actors are waiting on now, one line each (Timekeeper.describe_actors).
        on_fault: called once, from the watchdog's thread, after the other processes were killed.
        hang_s: wall seconds stopped before a process counts as hung (also the Timekeeper loop's).
        drain_s: the load generator's time to write its results after a fault elsewhere.
    """

    def __init__(self, *, clock: Callable[[], float | None], waits: Callable[[], list[str]] | None = None,
                 on_fault: Callable[[Fault], None] | None = None, hang_s: float = HANG_S,
                 drain_s: float = DRAIN_S, poll_s: float = 0.2, discover_s: float = 1.0):
        self.clock = clock
        self.waits = waits
        self.on_fault = on_fault
        self.hang_s = hang_s
        self.drain_s = drain_s
        self.poll_s = poll_s
        self.discover_s = discover_s
        self.fault: Fault | None = None
        self._lock = threading.Lock()
        self._watched: list[_Watched] = []
        self._gone: list[_Watched] = []  # exited or unwatched: closed pidfds, kept for reap()
        self._timekeeper = None
        self._kill_at: list[tuple[float, _Watched]] = []
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._last_discover = 0.0
        self.load_started: float | None = None  # clock() when the load phase started (the runner sets it)

    # ------------------------------------------------------------------ registration

    def add(self, pid: int, kind: str, *, name: str | None = None, log_path: Path | None = None,
            child: bool = True, group: bool = True, exits_ok: bool = False, deaths: bool = True,
            drain: bool = False, tree: "EngineAdapter | None" = None) -> None:
        """Watches process pid (kind: a KIND_NAMES key).

        Args:
            child: pid is this process's child (its exit status can be read without reaping it).
            group: pid leads its process group, which is killed with it.
            exits_ok: an exit with status 0 is its normal end, not a fault.
            deaths: False: only hangs; its owner reports its exit (exited()).
            drain: after a fault elsewhere, it gets drain_s before it is killed.
            tree: discover its descendants that the adapter names (engine core, workers).
        """
        what = KIND_NAMES.get(kind, kind)
        w = _Watched(pid, kind, f"{what} ({name}, pid {pid})" if name else f"{what} (pid {pid})", log_path, child,
                     group, exits_ok, deaths, self.drain_s if drain else 0.0, tree)
        w.created = _create_time(pid)
        if deaths:
            try:
                w.pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                w.pidfd = -1
        with self._lock:
            self._watched.append(w)
            if tree is not None:
                self._last_discover = 0.0  # at once: the engine's processes are up once it serves
        self._poke()
        if deaths and w.pidfd < 0:
            self._died(w)

    def unwatch(self, pid: int) -> None:
        """Stops watching pid (its end is due now)."""
        with self._lock:
            for w in [w for w in self._watched if w.pid == pid]:
                self._watched.remove(w)
                self._gone.append(w)
                _close(w)

    def watch_timekeeper(self, timekeeper) -> None:
        """Watches the Timekeeper's loop thread (it must not end, nor stop turning)."""
        self._timekeeper = timekeeper

    def exited(self, pid: int | None, kind: str, rc: int, log_path: Path | None = None) -> None:
        """A watched process's owner saw it exit with returncode rc (a fault)."""
        name = next((w.name for w in self._watched if w.pid == pid), f"{KIND_NAMES.get(kind, kind)} (pid {pid})")
        self._fault(Fault(kind, name, pid, returncode_status(rc), False, self._clock(),
                          time.monotonic(), str(log_path) if log_path else None))

    def deadlock(self, report: str) -> None:
        """The Timekeeper's on_deadlock: a deadlock is a fault of the whole deployment."""
        lines = report.splitlines()
        self._fault(Fault("deadlock", "the deployment", None, "deadlocked: " + (lines[0] if lines else ""), True,
                          self._clock(), time.monotonic(), waiting=lines[1:]))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._loop, name="revati-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops watching (before the runner's own teardown: its exits are due). Idempotent."""
        self._stop.set()
        self._poke()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._lock:
            for w in self._watched:
                _close(w)
            self._gone += self._watched
            self._watched = []

    def reap(self) -> list[str]:
        """SIGKILLs every process it watched or discovered that is still alive (the same process:
        its start time checked), after the runner's teardown. Returns what it had to kill."""
        killed = []
        for w in self._gone + self._watched:
            if w.created is not None and _create_time(w.pid) == w.created and _state(w.pid) not in ("Z", "X", None):
                try:
                    os.kill(w.pid, signal.SIGKILL)
                    killed.append(w.name)
                except (ProcessLookupError, PermissionError):
                    pass
        return killed

    def __enter__(self) -> "Watchdog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the watchdog must never take the run down, nor stop
                log.exception("revati: the watchdog's turn failed")
                time.sleep(self.poll_s)

    def _turn(self) -> None:
        with self._lock:
            watched = list(self._watched)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd = {w.pidfd: w for w in watched if w.pidfd >= 0}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(self.poll_s * 1000)
        if self._stop.is_set():
            return
        died = []
        for fd, _ in ready:
            if fd == self._wake_r:
                os.read(self._wake_r, 4096)
            elif fd in by_fd:
                died.append(by_fd[fd])
        for w in sorted(died, key=lambda w: _DEPTH.get(w.kind, 3)):
            self._died(w)
        self._check_stopped(watched)
        self._check_timekeeper()
        self._kill_due()
        now = time.monotonic()
        if now - self._last_discover >= self.discover_s:
            self._last_discover = now
            self._discover()

    def _discover(self) -> None:
        """Adds the engine's named descendants of each watched tree (engine core, workers)."""
        import psutil

        # NOTE: a fresh list, not the turn's: add() of a tree asks for a discovery at once, and a
        # turn that took its list before that add would spend it on a list without the tree (the
        # engine core then went unwatched for discover_s, and its death was named as the API
        # server's exit that followed it).
        with self._lock:
            watched = list(self._watched)
        known = {w.pid for w in watched} | {w.pid for w in self._gone}
        for w in watched:
            if w.tree is None or self.fault is not None:
                continue
            try:
                kids = psutil.Process(w.pid).children(recursive=True)
            except psutil.Error:
                continue
            for p in kids:
                if p.pid in known:
                    continue
                try:
                    cmd = p.cmdline()
                except psutil.Error:
                    continue
                title = (cmd[0] if cmd else "").strip()
                kind = w.tree.process_kind(title.split(" ")[0]) if title else None
                if kind is None or kind == "api":
                    continue
                self.add(p.pid, kind, name=title.split(" ")[0], log_path=w.log_path,
                         child=False, group=False)
                log.debug("revati: watching %s (pid %d), a descendant of pid %d", title, p.pid, w.pid)
                known.add(p.pid)

    def _died(self, w: _Watched) -> None:
        status = self._exit_status(w)
        with self._lock:
            if w in self._watched:
                self._watched.remove(w)
                self._gone.append(w)
            _close(w)
        if self._stop.is_set():
            return
        if w.exits_ok and status == describe_status(os.CLD_EXITED, 0):
            return
        self._fault(Fault(w.kind, w.name, w.pid, status, False, self._clock(), time.monotonic(),
                          str(w.log_path) if w.log_path else None))

    def _exit_status(self, w: _Watched) -> str:
        if w.child and w.pidfd >= 0:
            try:
                r = os.waitid(os.P_PIDFD, w.pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
                if r is not None:
                    return describe_status(r.si_code, r.si_status)
            except ChildProcessError:
                pass
        try:
            with open(f"/proc/{w.pid}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z" and len(fields) >= 50:
                return describe_wait_status(int(fields[49]))
        except (OSError, ValueError):
            pass
        return "exited (its exit status went to its parent first)"

    def _check_stopped(self, watched: list[_Watched]) -> None:
        now = time.monotonic()
        for w in watched:
            state = _state(w.pid)
            if state not in ("T", "t"):
                w.stopped_since = None
                continue
            if w.stopped_since is None:
                w.stopped_since = (now, self._clock())
            elif now - w.stopped_since[0] >= self.hang_s:
                why = "a debugger's stop" if state == "t" else "SIGSTOP or SIGTSTP"
                self._fault(Fault(w.kind, w.name, w.pid,
                                  f"hung: stopped (state {state}, {why}) for {now - w.stopped_since[0]:.1f} s",
                                  True, w.stopped_since[1], now, str(w.log_path) if w.log_path else None))
                return

    def _check_timekeeper(self) -> None:
        tk = self._timekeeper
        if tk is None or tk.stopped or self.fault is not None:
            return
        crashed = getattr(tk, "crashed", None)
        if crashed is not None:
            self._fault(Fault("timekeeper", "the Timekeeper's loop", os.getpid(),
                              f"died: {crashed.strip().splitlines()[-1]}", False, self._clock(), time.monotonic(),
                              log_tail=crashed))
            return
        turned = getattr(tk, "loop_turned", None)
        if turned is not None and time.monotonic() - turned >= self.hang_s:
            self._fault(Fault("timekeeper", "the Timekeeper's loop", os.getpid(),
                              f"hung: its loop has not turned for {time.monotonic() - turned:.1f} s", True,
                              self._clock(), time.monotonic(), log_tail=_thread_stack(tk)))

    # ------------------------------------------------------------------ the fault

    def _clock(self) -> float | None:
        try:
            return self.clock()
        except Exception:  # noqa: BLE001 - a dead clock still lets the fault be told
            return None

    def _fault(self, f: Fault) -> None:
        with self._lock:
            if self.fault is not None or self._stop.is_set():
                return
            self.fault = f
            watched = list(self._watched)
        if f.log_path:
            f.log_tail = tail(Path(f.log_path), 20)
            if not f.hung and "signal" not in f.status:  # an exit of its own: it may have said why
                f.reason = log_reason(Path(f.log_path))
        if f.virtual_s is not None and self.load_started is not None and f.virtual_s >= self.load_started:
            f.load_s = f.virtual_s - self.load_started
        if self.waits is not None and f.kind != "deadlock":
            try:
                f.waiting = self.waits()
            except Exception as e:  # noqa: BLE001
                f.waiting = [f"(could not be read: {e!r})"]
        log.warning("revati: %s", f.headline())
        now = time.monotonic()
        # NOTE: no drain when the clock itself failed: the load generator's waits would never end.
        drain = f.kind != "timekeeper"
        for w in watched:
            if drain and w.drain_s and w.pid != f.pid:
                self._kill_at.append((now + w.drain_s, w))
            else:
                _kill(w)
        if self.on_fault is not None:
            try:
                self.on_fault(f)
            except Exception:  # noqa: BLE001
                log.exception("revati: on_fault failed")

    def _kill_due(self) -> None:
        now = time.monotonic()
        for item in [x for x in self._kill_at if x[0] <= now]:
            self._kill_at.remove(item)
            _kill(item[1])


# An exception's own line in a log: "ValueError: To serve at least one request ...", with vLLM's
# "(EngineCore pid=1) ERROR 12-02 21:07:00 [core.py:1510] " prefix or none; not a traceback's
# "raise ValueError(" nor the wrappers that follow the first failure ("RuntimeError: Engine core
# initialization failed. See root cause above").
_REASON = re.compile(r"(?:^|\] |^\S+ )((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): .+)$")
_WRAPPERS = ("See root cause above", "Engine core initialization failed")


def log_reason(path: Path, scan_bytes: int = 1 << 20) -> str:
    """The first exception line of the end of a log (its root cause: later ones wrap it), or ""."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - scan_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in text.splitlines():
        m = _REASON.search(line.strip())
        if m and not any(w in m.group(1) for w in _WRAPPERS):
            return m.group(1)[:500]
    return ""


def _thread_stack(tk) -> str:
    """Where the Timekeeper's loop thread is now (its Python stack, innermost last): a hung loop
    names its own cause."""
    import sys
    import traceback

    t = getattr(tk, "_thread", None)
    frame = sys._current_frames().get(t.ident) if t is not None and t.ident else None
    if frame is None:
        return ""
    return "the loop thread's stack (innermost last):\n" + "".join(traceback.format_stack(frame)[-12:])


def _kill(w: _Watched) -> None:
    try:
        if w.group:
            os.killpg(w.pid, signal.SIGKILL)
        else:
            os.kill(w.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close(w: _Watched) -> None:
    if w.pidfd >= 0:
        os.close(w.pidfd)
        w.pidfd = -1


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return chr(stat[stat.rindex(b")") + 2])
    except (OSError, ValueError, IndexError):
        return None


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# ---------------------------------------------------------------------- the failed report

def cut_rows(bench: dict | None, cut_s: float | None) -> list[dict]:
    """requests.jsonl's rows of a failed run: a request counts as succeeded only if it finished
    (start + latency, on the load generator's clock, the deployment's) by cut_s; the others are
    failed, with the reason."""
    from revati.run.report import per_request

    if not bench:
        return []
    rows = per_request(bench)
    starts = bench.get("start_times") or [None] * len(rows)
    lats = bench.get("latencies") or [None] * len(rows)
    for r, st, lat in zip(rows, starts, lats):
        if r["success"] and cut_s is not None and (st is None or lat is None or st + lat > cut_s):
            r.update(success=False, ttft_ms=None, tpot_ms=None, e2el_ms=None, itl_ms=[],
                     error=f"finished after the fault at virtual {cut_s:.3f} s: not counted")
    return rows


def failed_report(bench: dict | None, rows: list[dict], num_prompts: int, emulation: dict, fault: Fault,
                  spec_slo=None) -> dict:
    """report.json of a run that a fault ended: "outcome": "failed", the fault as "failure", and
    the metrics of the requests finished before it only (metrics_scope says so)."""
    from revati.run.report import fill_metrics, slo_attainment

    ok = [r for r in rows if r["success"]]
    rep: dict[str, Any] = {"outcome": "failed", "failure": fault.as_dict()}
    if bench:  # the load's settings, not its metrics (they are recomputed below)
        for k in ("backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
                  "max_concurrency", "date"):
            if k in bench:
                rep[k] = bench[k]
    t0 = None
    if bench and bench.get("start_times"):
        t0 = min((s for s in bench["start_times"] if s is not None), default=None)
    span = (fault.virtual_s - t0) if (t0 is not None and fault.virtual_s is not None) else None
    rep["completed"] = len(ok)
    rep["failed"] = num_prompts - len(ok)
    rep["duration"] = span
    rep["total_input_tokens"] = sum(r.get("input_tokens") or 0 for r in ok)
    rep["total_output_tokens"] = sum(r.get("output_tokens") or 0 for r in ok)
    if span and span > 0:
        rep["request_throughput"] = len(ok) / span
        rep["output_throughput"] = rep["total_output_tokens"] / span
        rep["total_token_throughput"] = (rep["total_input_tokens"] + rep["total_output_tokens"]) / span
    fill_metrics(rep, rows)
    slo = slo_attainment(spec_slo, rep)
    if slo:
        rep["slo_attainment"] = slo
    when = f"virtual {fault.virtual_s:.3f} s" if fault.virtual_s is not None else "an unknown time"
    if bench is None:
        rep["metrics_scope"] = f"none: the load generator wrote no results; {fault.condition} at {when}"
    else:
        rep["metrics_scope"] = (f"only the {len(ok)} of {num_prompts} request(s) that finished before the fault "
                                f"({fault.condition} at {when}); the rest count as failed")
    rep["emulation"] = emulation
    return rep


# ---------------------------------------------------------------------- pods (the operator)

#: What vLLM's API server logs when a process below it dies (the container's last log lines are
#: its termination message: FallbackToLogsOnError); the first that matches names the cause.
# NOTE: vLLM's own words (v1/executor/multiproc_executor.py, v1/engine/core_client.py).
ENGINE_DEATH_LINES = (
    ("worker", ("Worker proc", "died unexpectedly")),
    ("worker", ("RayWorkerProc", "died unexpectedly")),
    ("engine", ("engine core exited unexpectedly",)),
    ("engine", ("EngineDeadError",)),
    ("engine", ("Engine core proc", "died")),
)


def pod_condition(component: str | None, container: str | None, exit_code: int, text: str = "") -> str | None:
    """The condition of a pod's container that terminated with exit_code (its termination
    message: text), as `revati run` names the same fault locally; None: no process of the
    deployment's own (the shim's init container, say)."""
    hung = False
    if container == "sidecar":
        return condition("sidecar", hung)
    if component in ("coordinator", "router"):
        return condition(component, hung)
    if component == "loadgen":
        return condition("loadgen") if exit_code >= 128 else None  # (its own failures: LoadgenFailed)
    if container == "engine":
        for kind, words in ENGINE_DEATH_LINES:
            if any(all(w in line for w in words) for line in text.splitlines()):
                return condition(kind)
        return condition("api")
    return None


def exit_code_words(code: int) -> str:
    """A container's exit code in words (128 + n: killed by signal n)."""
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit code {code}"
