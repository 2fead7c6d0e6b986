"""The contention governor: CPU work counts its CPU time, not this host's queueing for a core.

Virtual time advances with real time while any actor runs (scaled by 1/dilation). On a host
with fewer cores than the deployment has busy threads (2 cores here: the API server, the
engine core, the load generator and the sidecar all want one), a runnable thread waits for a
core, and that wait would count as the thread's CPU work: emulated latencies would grow with
this machine's core count and with whatever else it runs. On the real GPU server each of those
processes has a core of its own.

The governor samples the number of runnable tasks on the host (``procs_running`` in
/proc/stat, less itself) every ``period_s``. With R runnable tasks on N cores, each gets N/R of
a core, so a second of its work takes R/N wall seconds; the clock then runs at
``dilation * max(1, R/N)``, averaged over ``window`` samples, so that a second of CPU work
still costs one virtual second (divided by the configured dilation). It never runs the clock
faster than the configured dilation allows.

Timed waits stay correct while the rate moves: a sleeper converts its virtual span to real time
at the base (fastest) rate and re-checks when it wakes (shim/src/clock_page.h), and the clock
is re-anchored without a step (ClockPage.set_dilation).

NOTE: sharing per task is what CFS does inside one scheduler autogroup (one session when
/proc/sys/kernel/sched_autogroup_enabled is 1); revati starts its children in new process
groups, not new sessions, for that reason. Load from other sessions is shared per session by
the kernel and only approximated here.

NOTE: R counts every runnable task on the host, emulated or not: load that other programs put
on the host slows the clock the same way, which is what keeps results steady under host load.
The counter is sampled, not integrated: bursts shorter than a period are averaged, not seen
individually.
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


class ContentionGovernor:
    """Runs the clock page at dilation x host oversubscription. start() / stop(), or a context."""

    def __init__(self, page: ClockPage, *, cores: int | None = None, period_s: float = 0.005,
                 window: int = 4, hysteresis: float = 0.03, sample=runnable_tasks):
        self.page = page
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

    def step(self, recent: deque) -> None:
        """One sample: read the host, publish a new rate when it moved by more than hysteresis."""
        recent.append(max(0, self._sample() - 1))  # less the governor's own thread
        f = self.factor(sum(recent) / len(recent))
        cur = self.page.get("dilation_ppm") / self.base_ppm
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
        try:
            self.page.set_dilation(self.base_ppm)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "ContentionGovernor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
