"""The contention governor: CPU work counts its CPU time, not this host's queueing for a core.

Virtual time advances with real time while any actor runs (scaled by 1/dilation). On a host
with fewer cores than the deployment has busy threads (2 cores here: the API server, the
engine core, the workers and the load generator all want one), a runnable thread waits for a
core, and that wait would count as the thread's CPU work: emulated latencies would grow with
this machine's core count and with whatever else it runs. On the real GPU server each of those
processes has a core of its own.

The governor measures that queueing directly. Every ``period_s`` it reads, for every emulated
thread the Timekeeper knows (each thread that announced a wait: the main threads of vLLM's API
server, engine core, workers and the load generator, and their I/O threads), the kernel's run
time and run-queue wait (/proc/PID/task/TID/schedstat, ns, exact counters). Over the last
``window`` periods the threads together ran R and waited Q for a core; the clock then runs at
``dilation * max((R + Q) / R, s_max)`` (at most ``max_factor`` times slower): the run-weighted
mean of the threads' own slowdowns, or, when larger, the slowdown s_max = (r + q) / r of the
most-delayed thread that was runnable for at least a quarter of the window, so the time the
critical thread spends queued is not counted as its CPU work (other threads' CPU then counts a
little less than its CPU time: the bias is put off the critical path).
It never runs the clock faster than the configured dilation.

NOTE: a ratio of sums over a window, not a sum of per-period maxima. The kernel adds a wait to
schedstat in one lump when the thread gets a CPU back, and threads take turns: the earlier
measure (the largest main-thread wait of each period, carried over as a debt) added up the lumps
of different threads and slowed the clock by about the number of competing threads too much.
Measured (/tmp-style benchmark in docs/timewarp.md, three processes each doing 5 ms of CPU and a
5 ms GPU op per iteration, 2 cores with a load average of ~10 from other jobs): 6.0 ms per
iteration with the old measure, 35 ms counted, 10 ms expected.

Without a list of processes (``pids=None``) it falls back to the host's run queue length,
``procs_running`` in /proc/stat: R runnable tasks on N cores give ``max(1, R/N)``. That is
exact only while every runnable task shares the CPU equally (one scheduler autogroup, no
spinning threads), so the per-process measure is the default.

Timed waits stay correct while the rate moves: a sleeper converts its virtual span to real time
at the current rate; when the clock speeds up before its timer fires, the Timekeeper wakes it
as soon as the clock passes its deadline (Timekeeper._wake_overdue). The clock is re-anchored
without a step (ClockPage.set_dilation).

NOTE: threads that never announce a wait (torch's worker pools) are not measured; they rarely
run while serving.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from revati.timekeeper.clock_page import ClockPage

if TYPE_CHECKING:
    from revati.timekeeper.timekeeper import Timekeeper


def runnable_tasks(stat_path: str = "/proc/stat") -> int:
    """procs_running from /proc/stat: tasks runnable or running on the host now."""
    with open(stat_path, "rb") as f:
        for line in f.read().splitlines():
            if line.startswith(b"procs_running "):
                return int(line.split()[1])
    raise RuntimeError(f"{stat_path} has no procs_running line")


def host_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (Linux has it)
        return os.cpu_count() or 1


@dataclass
class GovernorStats:
    samples: int = 0
    changes: int = 0
    mean_factor: float = 1.0  # time-average of the oversubscription factor applied
    max_factor: float = 1.0
    _sum: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "changes": self.changes, "mean_factor": round(self.mean_factor, 4),
                "max_factor": round(self.max_factor, 4)}


class _SchedStat:
    """Run time and run-queue wait (ns) of threads, read with pread from fds kept open."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], int] = {}
        self._last: dict[tuple[int, int], tuple[int, int]] = {}
        self.per_thread: dict[tuple[int, int], tuple[int, int]] = {}  # the last call's deltas

    def deltas(self, tasks) -> tuple[int, int]:
        """(run, wait) ns summed over the live (pid, tid) tasks since the previous call. A pid
        alone, (pid, None), is its main thread."""
        run_sum = wait_sum = 0
        live = set()
        self.per_thread = {}
        for key in tasks:
            fd = self._fds.get(key)
            try:
                if fd is None:
                    pid, tid = key
                    path = f"/proc/{pid}/schedstat" if tid is None else f"/proc/{pid}/task/{tid}/schedstat"
                    fd = self._fds[key] = os.open(path, os.O_RDONLY)
                run, wait = (int(x) for x in os.pread(fd, 128, 0).split()[:2])
            except (OSError, ValueError):
                self._drop(key)
                continue
            live.add(key)
            prev = self._last.get(key)
            self._last[key] = (run, wait)
            if prev is not None:
                run_sum += run - prev[0]
                wait_sum += wait - prev[1]
                self.per_thread[key] = (run - prev[0], wait - prev[1])
        for key in set(self._fds) - live:
            self._drop(key)
        return run_sum, wait_sum

    def _drop(self, key) -> None:
        fd = self._fds.pop(key, None)
        self._last.pop(key, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for key in list(self._fds):
            self._drop(key)


class ContentionGovernor:
    """Runs the clock page at dilation x host oversubscription. start() / stop(), or a context."""

    def __init__(self, page: ClockPage, pids=None, *, cores: int | None = None, period_s: float = 0.005,
                 window: int = 8, hysteresis: float = 0.03, max_factor: float = 16.0, sample=runnable_tasks):
        """pids: a callable returning the threads on the clock as (pid, tid) pairs (a bare pid,
        or tid None, means its main thread), or None for the host run-queue measure (sample)."""
        self.page = page
        self.pids = pids
        self.max_factor = max_factor
        self._sched = _SchedStat()
        self._primed = False
        self.mode = "schedstat" if pids is not None else "procs_running"
        self.cores = cores or host_cores()
        self.period_s = period_s
        self.window = window
        self.hysteresis = hysteresis
        self._sample = sample
        self.base_ppm = page.get("base_dilation_ppm") or page.get("dilation_ppm")
        self.stats = GovernorStats()
        self._per: dict = {}  # see _push
        self._per_of: deque | None = None
        self._per_len = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def factor(self, runnable: float) -> float:
        """Oversubscription for `runnable` tasks other than the governor itself."""
        return max(1.0, runnable / self.cores)

    def _measure(self, recent: deque) -> float:
        if self.pids is None:
            recent.append(max(0, self._sample() - 1))  # less the governor's own thread
            return self.factor(sum(recent) / len(recent))
        tasks = [(t, None) if isinstance(t, int) else t for t in self.pids()]
        run, wait = self._sched.deltas(tasks)
        if not self._primed:
            self._primed = True
            return self.page.rate_ppm() / self.base_ppm
        now = time.monotonic_ns()
        self._push(recent, (run, wait, dict(self._sched.per_thread), now))
        r = sum(x[0] for x in recent)
        q = sum(x[1] for x in recent)
        if r <= 0:  # nothing ran: keep the rate (no CPU work is being counted anyway)
            return self.page.rate_ppm() / self.base_ppm
        f = (r + q) / r
        # NOTE: and at least the slowdown of the most-delayed busy thread (runnable a quarter of
        # the window or more): the critical thread of a step (vLLM's engine core) runs short
        # bursts after each wake-up that queue longest, and the run-weighted mean alone left its
        # CPU counted 2.5-3x under load (TTFT +9.8% pinned to 1 core; with the max: +0.2%).
        if len(recent) > 1:
            wall = now - recent[0][3]
            busy = [(a + b) / a for a, b in self._per.values() if a > 0 and a + b >= 0.25 * wall]
            if busy:
                f = max(f, max(busy))
        return min(self.max_factor, f)

    def _push(self, recent: deque, entry: tuple) -> None:
        """Appends a period to the window and keeps self._per, each thread's (run, wait) summed
        over the window's periods but its first (integers: the same sums as adding them anew
        each period, at a fraction of the cost)."""
        if recent is not self._per_of or len(recent) != self._per_len:  # another window: sum it anew
            self._per_of, self._per = recent, {}
            for _, _, d, _ in list(recent)[1:]:
                self._add(d, 1)
        full = recent.maxlen is not None and len(recent) == recent.maxlen
        if full and len(recent) >= 2:  # the first period drops out, the second becomes the first
            self._add(recent[1][2], -1)
        if recent and not (full and len(recent) == 1):  # the entry will not be the first
            self._add(entry[2], 1)
        recent.append(entry)
        self._per_len = len(recent)

    def _add(self, d: dict, sign: int) -> None:
        per = self._per
        for k, (a, b) in d.items():
            x = per.get(k)
            if x is None:
                per[k] = [a, b]
            else:
                x[0] += sign * a
                x[1] += sign * b
                if sign < 0 and x[0] == 0 and x[1] == 0:
                    del per[k]

    def step(self, recent: deque) -> None:
        """One sample: measure, publish a new rate when it moved by more than hysteresis."""
        f = self._measure(recent)
        cur = self.page.rate_ppm() / self.base_ppm
        if abs(f - cur) > self.hysteresis * cur:
            self.page.set_dilation(round(self.base_ppm * f))
            self.stats.changes += 1
            cur = f
        s = self.stats
        s.samples += 1
        s._sum += cur
        s.mean_factor = s._sum / s.samples
        s.max_factor = max(s.max_factor, cur)

    def _loop(self) -> None:
        recent: deque = deque(maxlen=self.window)
        while not self._stop.wait(self.period_s):
            try:
                self.step(recent)
            except (OSError, ValueError):  # the page was closed under us: the run is over
                return

    def start(self) -> "ContentionGovernor":
        self._thread = threading.Thread(target=self._loop, name="revati-governor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self._sched.close()
        try:
            self.page.set_dilation(self.base_ppm)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "ContentionGovernor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_for(timekeeper: "Timekeeper") -> ContentionGovernor:
    """Starts a governor on a Timekeeper's clock page, measuring every thread it knows
    (Timekeeper.announced_tasks, read each sample)."""
    return ContentionGovernor(timekeeper.page, timekeeper.announced_tasks).start()
