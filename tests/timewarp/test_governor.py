"""The contention governor (revati/timekeeper/governor.py): CPU work costs its CPU time even
when the host has more runnable tasks than cores, and the clock stays continuous and monotonic
while its rate changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque

import pytest

from revati.timekeeper.governor import start_for as start_governor
from revati.timekeeper import clock_page as cp
from revati.timekeeper.governor import ContentionGovernor, host_cores, runnable_tasks
from revati.timekeeper.timekeeper import Timekeeper
from tests.timewarp._timewarp import finish, spawn


def test_runnable_tasks_reads_the_host():
    assert runnable_tasks() >= 1  # this test is running
    assert host_cores() >= 1


def test_rate_follows_oversubscription_and_never_beats_the_base(tmp_path):
    page = cp.ClockPage.create(tmp_path / "clock", sock_path="/tmp/x.sock", protocol_version=1, dilation=2.0)
    try:
        load = [9]
        gov = ContentionGovernor(page, cores=4, window=1, sample=lambda: load[0])
        gov.step(deque(maxlen=1))  # 8 runnable besides the governor on 4 cores: 2x
        assert page.get("dilation_ppm") == 4_000_000 and page.get("base_dilation_ppm") == 2_000_000
        # The clock runs at 1/4 of real time now.
        r0, v0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC), page.now_ns()
        time.sleep(0.2)
        r1, v1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC), page.now_ns()
        assert (v1 - v0) / (r1 - r0) == pytest.approx(0.25, rel=0.05)
        load[0] = 2  # under-subscribed: back to the base rate, not faster
        gov.step(deque(maxlen=1))
        assert page.get("dilation_ppm") == 2_000_000
        page.set_dilation(1_000_000)  # below the base: clamped
        assert page.get("dilation_ppm") == 2_000_000
        assert gov.stats.changes == 2 and gov.stats.max_factor == 2.0
    finally:
        page.close()


def test_rate_changes_keep_the_clock_continuous(tmp_path):
    page = cp.ClockPage.create(tmp_path / "clock", sock_path="/tmp/x.sock", protocol_version=1)
    try:
        last = page.now_ns()
        for i in range(2000):
            r0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            before = page.now_ns()
            page.set_dilation(1_000_000 * (1 + i % 5))
            after = page.now_ns()
            r1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            # No step back, and no step forward: at dilation >= 1 the clock moves at most as
            # much as real time did.
            assert last <= before <= after <= before + (r1 - r0)
            last = after
    finally:
        page.close()


BURN = r'''
import json, time
t0, c0 = time.monotonic(), time.process_time()
while time.process_time() - c0 < 0.6:  # 0.6 s of CPU; never blocks
    pass
print(json.dumps({"virtual": time.monotonic() - t0, "cpu": time.process_time() - c0}))
'''

HOG = "import time\nt = time.monotonic() + 30\nwhile time.monotonic() < t: pass"


def _burn_ratio(host_contention: str) -> float:
    """virtual s / CPU s of a busy loop while host_cores() other processes hog the cores."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(host_cores())]
    try:
        with Timekeeper() as tk:
            gov = start_governor(tk) if host_contention == "compensate" else None
            try:
                time.sleep(0.3)  # the hogs are spinning
                (out,) = finish(spawn(tk, BURN), timeout=60)
            finally:
                if gov:
                    gov.stop()
        r = json.loads(out)
        return r["virtual"] / r["cpu"]
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_cpu_work_costs_its_cpu_time_under_host_load():
    """With every core hogged, a busy loop gets about half a core. Counted, its virtual time is
    about twice its CPU time; compensated, about its CPU time."""
    counted = _burn_ratio("count")
    compensated = _burn_ratio("compensate")
    print(f"virtual/CPU with {host_cores()} hogs: count {counted:.2f}, compensate {compensated:.2f}")
    # Other load on the host (CI neighbours) raises `counted` and is compensated too.
    assert counted > 1.1  # the hogs took a share of the cores (about 1.5 expected)
    assert 0.7 < compensated < 1.3 and compensated < counted


def test_the_window_sums_are_those_of_adding_the_periods_anew():
    """ContentionGovernor keeps each thread's window sums as it goes (_push); the factor must be
    the one of summing the window's periods anew every period (the earlier code), exactly."""
    import random

    from revati.timekeeper import governor as g

    def reference(recent) -> float:  # the earlier _measure's arithmetic over the same window
        r = sum(x[0] for x in recent)
        q = sum(x[1] for x in recent)
        if r <= 0:
            return -1.0
        f = (r + q) / r
        if len(recent) > 1:
            wall = recent[-1][3] - recent[0][3]
            per: dict = {}
            for _, _, d, _ in list(recent)[1:]:
                for k, (a, b) in d.items():
                    x = per.setdefault(k, [0, 0])
                    x[0] += a
                    x[1] += b
            busy = [(a + b) / a for a, b in per.values() if a > 0 and a + b >= 0.25 * wall]
            if busy:
                f = max(f, max(busy))
        return min(16.0, f)

    class Page:
        def rate_ppm(self):
            return 1_000_000

        def get(self, key):
            return 1_000_000

    rng = random.Random(0)
    for window in (1, 2, 8):
        gov = g.ContentionGovernor(Page(), lambda: [], window=window)
        gov._primed = True
        recent: deque = deque(maxlen=window)
        shadow: deque = deque(maxlen=window)
        live = {(1, t) for t in range(6)}
        t = 0
        for _ in range(400):
            if rng.random() < 0.1:  # threads come and go
                live ^= {(1, rng.randrange(12))}
            per = {k: (rng.choice([0, 0, rng.randrange(5_000_000)]), rng.choice([0, rng.randrange(9_000_000)]))
                   for k in live}

            class Sched:
                per_thread = per

                def deltas(self, tasks):
                    return sum(a for a, _ in per.values()), sum(b for _, b in per.values())

            gov._sched = Sched()
            t += 5_000_000
            g.time.monotonic_ns, real = (lambda: t), g.time.monotonic_ns
            try:
                f = gov._measure(recent)
            finally:
                g.time.monotonic_ns = real
            shadow.append((sum(a for a, _ in per.values()), sum(b for _, b in per.values()), dict(per), t))
            want = reference(shadow)
            assert f == (1.0 if want < 0 else want), (window, f, want)
