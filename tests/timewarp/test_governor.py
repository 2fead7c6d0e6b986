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
