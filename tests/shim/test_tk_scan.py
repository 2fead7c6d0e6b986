"""rv_tk_quiet (shim/tk/tk_scan.c), the Timekeeper's quiescence test, on a child whose threads
come, go, spin and sleep: a thread set that changed is always seen, also when the thread count
did not change (the scan lists a process's threads only when its count moved or a thread it
knew is gone), and the busy thread the last scan found counts only for a process it is asked about."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from revati.launch import shim_api

# Reads commands from stdin: "start N" (a thread that sleeps), "stop N", "spin N" (a thread that
# burns CPU until stopped), and answers each with a line.
CHILD = r"""
import sys, threading
threads = {}
def sleeper(ev): ev.wait()
def spinner(ev):
    while not ev.is_set(): pass
for line in sys.stdin:
    cmd, name = line.split()
    if cmd in ("start", "spin"):
        ev = threading.Event()
        t = threading.Thread(target=sleeper if cmd == "start" else spinner, args=(ev,))
        t.start()
        threads[name] = (t, ev)
    elif cmd == "stop":
        t, ev = threads.pop(name)
        ev.set(); t.join()
    print("ok", flush=True)
"""


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def do(self, *cmds: str) -> None:
        for c in cmds:
            self.proc.stdin.write(c + "\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def quiet():
    shim_api.tk_library.cache_clear()
    fn = shim_api.tk_scanner(cap=4096).quiet
    children: list[Child] = []

    def call(pids: list[int], exempt: list[int] = (), settle: bool = True) -> int:
        """rv_tk_quiet of pids; with settle, waits until no thread runs (the child answering)."""
        p = (ctypes.c_int32 * len(pids))(*pids)
        e = (ctypes.c_int32 * max(1, len(exempt)))(*exempt)
        deadline = time.monotonic() + 10
        while True:
            r = fn(p, len(pids), e, len(exempt))
            if r != -1 or not settle:
                return r
            assert time.monotonic() < deadline, "the child never went idle"
            time.sleep(0.01)

    call.child = lambda: children.append(Child()) or children[-1]
    yield call
    for c in children:
        c.close()
    shim_api.tk_library.cache_clear()


def test_a_new_thread_is_seen_also_when_another_left(quiet):
    c = quiet.child()
    c.do("start a", "start b")
    pid = c.proc.pid
    main = [pid]  # exempt: the main thread runs to answer each command; the others must be seen
    assert quiet([pid]) == 1  # every thread is new
    assert quiet([pid]) == 0  # nothing ran since
    assert quiet([pid]) == 0
    c.do("stop a", "start x")  # the same thread count, another thread set
    assert quiet([pid], main) == 1
    assert quiet([pid], main) == 0
    c.do("start y")  # one more thread, none gone
    assert quiet([pid], main) == 1
    assert quiet([pid], main) == 0
    c.do("stop b")  # one fewer
    assert quiet([pid], main) == 0
    c.do("start z")
    assert quiet([pid], main) == 1
    assert quiet([pid], main) == 0


def test_a_busy_thread_is_seen_and_counts_only_for_a_process_asked_about(quiet):
    busy, idle = quiet.child(), quiet.child()
    busy.do("start a")
    idle.do("start a")
    both = [busy.proc.pid, idle.proc.pid]
    quiet(both)
    assert quiet(both) == 0
    busy.do("spin s")
    assert quiet(both, settle=False) == -1
    assert quiet(both, settle=False) == -1  # the same thread, read first
    # the busy process is no longer asked about: its thread must not count
    assert quiet([idle.proc.pid]) in (0, 1)
    assert quiet([idle.proc.pid]) == 0
    busy.do("stop s")
    quiet(both)
    assert quiet(both) == 0


def test_exempt_threads_may_run(quiet):
    c = quiet.child()
    c.do("start a")
    pid = c.proc.pid
    quiet([pid])
    assert quiet([pid]) == 0
    c.do("start b", "stop b")  # the main thread ran (it answered): not exempt
    assert quiet([pid]) == 1
    c.do("start b", "stop b")
    assert quiet([pid], exempt=[pid]) == 0  # exempt: its runs do not count


def _counters() -> dict[str, int]:
    return shim_api.tk_scanner(cap=16).counters()


def test_a_stopped_process_is_busy_also_after_an_idle_sample(quiet):
    """SIGSTOP puts the threads in T without their being runnable: the counts-only sample (taken
    after an idle one, when nothing else runs on the host) must still see it, through the
    switch-in that entering T needs. Repeated until one counts-only sample decided, where the
    host allows it (a busy host takes the full scan, which must see it as well)."""
    c = quiet.child()
    c.do("start a", "start b")
    pid = c.proc.pid
    counted = False
    for _ in range(50):
        quiet([pid])
        assert quiet([pid]) == 0  # idle, and its counts recorded
        before = _counters()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.02)
            assert quiet([pid], settle=False) == -1
            assert quiet([pid], settle=False) == -1  # stopped, still
        finally:
            os.kill(pid, signal.SIGCONT)
        after = _counters()
        counted = after["counts_samples"] > before["counts_samples"]
        if counted or not _loadavg_is_trusted():
            break
    c.do("start c")  # it answers again after SIGCONT
    assert quiet([pid]) in (0, 1)


def test_counts_only_samples_see_a_thread_that_ran(quiet):
    """The counts-only sample decides an idle sample without reading states, and still sees a
    thread that got a CPU (its run count moved)."""
    c = quiet.child()
    c.do("start a")
    pid = c.proc.pid
    quiet([pid])
    assert quiet([pid]) == 0
    before = _counters()
    for _ in range(20):
        c.do("start x", "stop x")  # the main thread ran (it answered)
        assert quiet([pid]) == 1
        assert quiet([pid]) == 0
        assert quiet([pid], [pid]) == 0
    after = _counters()
    assert after["samples"] - before["samples"] >= 60


def _loadavg_is_trusted() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return not any(line.split()[4] == "/proc/loadavg" for line in f)
    except OSError:
        return False
