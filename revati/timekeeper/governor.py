"""The contention governor: CPU work counts its CPU time, not this host's queueing for a core.

Virtual time advances with real time while any actor runs (scaled by 1/dilation). On a host
with fewer cores than the deployment has busy threads (2 cores here: the API server, the
engine core, the workers and the load generator all want one), a runnable thread waits for a
core, and that wait would count as the thread's CPU work: emulated latencies would grow with
this machine's core count and with whatever else it runs. On the real GPU server each of those
processes has a core of its own.

The governor measures that queueing directly. Every ``period_s`` it reads, for the main thread
of every process on the clock (where vLLM's API server, engine core, workers and the load
generator do their work), the kernel's run time and run-queue wait (/proc/PID/schedstat, ns).
Over the last ``window`` periods of wall time W, the thread that waited most for a core waited
Q; the clock then runs at ``dilation * W / (W - Q)`` (at most ``max_factor`` times slower), so
the time that thread spent queued is not counted as its CPU work. It never runs the clock
faster than the configured dilation.

Without a list of processes (``pids=None``) it falls back to the host's run queue length,
``procs_running`` in /proc/stat: R runnable tasks on N cores give ``max(1, R/N)``. That is
exact only while every runnable task shares the CPU equally (one scheduler autogroup, no
spinning threads), so the per-process measure is the default.

Timed waits stay correct while the rate moves: a sleeper converts its virtual span to real time
at the current rate; when the clock speeds up before its timer fires, the Timekeeper wakes it
as soon as the clock passes its deadline (Timekeeper._wake_overdue). The clock is re-anchored
without a step (ClockPage.set_dilation).

NOTE: only main threads are measured; work that a process does on other threads (vLLM's
engine-core I/O threads, tokenizer pools) is counted at wall time, queueing included.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from revati.timekeeper.clock_page import ClockPage


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
    """Run time and run-queue wait (ns) of processes' main threads, read with pread."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._last: dict[int, tuple[int, int]] = {}

    def waits(self, pids) -> list[int]:
        """Run-queue wait (ns) of each live pid's main thread since the previous call."""
        out = []
        live = set()
        for pid in pids:
            fd = self._fds.get(pid)
            try:
                if fd is None:
                    fd = self._fds[pid] = os.open(f"/proc/{pid}/schedstat", os.O_RDONLY)
                run, wait = (int(x) for x in os.pread(fd, 128, 0).split()[:2])
            except (OSError, ValueError):
                self._drop(pid)
                continue
            live.add(pid)
            prev = self._last.get(pid)
            self._last[pid] = (run, wait)
            if prev is not None:
                out.append(wait - prev[1])
        for pid in set(self._fds) - live:
            self._drop(pid)
        return out

    def _drop(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        self._last.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self._drop(pid)


class ContentionGovernor:
    """Runs the clock page at dilation x host oversubscription. start() / stop(), or a context."""

    def __init__(self, page: ClockPage, pids=None, *, cores: int | None = None, period_s: float = 0.005,
                 window: int = 4, hysteresis: float = 0.03, max_factor: float = 16.0, sample=runnable_tasks):
        """pids: a callable returning the processes on the clock (per-process measure), or
        None for the host run-queue measure (sample)."""
        self.page = page
        self.pids = pids
        self.max_factor = max_factor
        self._sched = _SchedStat()
        self._t_last: float | None = None
        self._debt = 0  # run-queue wait (ns) measured but not yet taken off the clock
        self.mode = "schedstat" if pids is not None else "procs_running"
        self.cores = cores or host_cores()
        self.period_s = period_s
        self.window = window
        self.hysteresis = hysteresis
        self._sample = sample
        self.base_ppm = page.get("base_dilation_ppm") or page.get("dilation_ppm")
        self.stats = GovernorStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def factor(self, runnable: float) -> float:
        """Oversubscription for `runnable` tasks other than the governor itself."""
        return max(1.0, runnable / self.cores)

    def _measure(self, recent: deque) -> float:
        if self.pids is None:
            recent.append(max(0, self._sample() - 1))  # less the governor's own thread
            return self.factor(sum(recent) / len(recent))
        now = time.monotonic_ns()
        waits = self._sched.waits(self.pids())
        if self._t_last is None:
            self._t_last = now
            return self.page.rate_ppm() / self.base_ppm
        wall, self._t_last = now - self._t_last, now
        # The kernel adds a wait to schedstat when the thread gets the CPU back, so a long wait
        # arrives in one lump: keep what one period cannot absorb for the next ones.
        self._debt += max(waits, default=0)
        q = min(self._debt, wall * (1 - 1 / self.max_factor))
        self._debt -= q
        recent.append((wall, q))
        w = sum(x for x, _ in recent)
        q = sum(y for _, y in recent)
        return w / (w - q) if w > 0 else 1.0

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
