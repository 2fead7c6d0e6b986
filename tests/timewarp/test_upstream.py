"""The Timekeeper's upstream policy (revati/timekeeper/upstream.py): a quiescent host's jump,
its freezes and its departed processes are the upstream's to handle, whatever it decides; the
default, LocalUpstream, jumps to the earliest deadline. relay.Relay is the other upstream
(tests/timewarp/test_multihost.py)."""

from __future__ import annotations

import json
import time

from revati.timekeeper.timekeeper import Timekeeper
from revati.timekeeper.upstream import LocalUpstream
from tests.timewarp._timewarp import finish, spawn

SLEEPER = r'''
import ctypes, json, sys, time
f = ctypes.CDLL(None).revati_clock_freeze
f.argtypes, f.restype = [ctypes.c_int], ctypes.c_int
assert f(1) == 0 and f(-1) == 0
t0 = time.monotonic()
time.sleep(float(sys.argv[1]))
print(json.dumps({"t0": t0, "t1": time.monotonic()}))
'''


class Recording(LocalUpstream):
    """LocalUpstream that records what reaches it; with jump=False it never jumps."""

    def __init__(self, jump: bool):
        super().__init__()
        self.jump = jump
        self.quiets: list[tuple[int, int]] = []
        self.freezes: list[int] = []
        self.left_pids: list[int] = []

    def quiet(self, firm: int, lazy: int) -> None:
        if firm >= 0 or lazy >= 0:
            self.quiets.append((firm, lazy))
        if self.jump:
            super().quiet(firm, lazy)

    def freeze(self, delta: int) -> None:
        self.freezes.append(delta)
        super().freeze(delta)

    def left(self, pid: int) -> None:
        self.left_pids.append(pid)
        super().left(pid)


def test_the_upstream_decides_the_jump():
    """A 30 s sleep ends at its deadline in a few wall seconds: the quiescent host handed that
    deadline to the upstream, which jumped there."""
    up = Recording(jump=True)
    with Timekeeper(upstream=up) as tk:
        t_wall = time.monotonic()
        p = spawn(tk, SLEEPER, "30")
        (out,) = finish(p)
        wall = time.monotonic() - t_wall
        d = json.loads(out)
        assert 30 <= d["t1"] - d["t0"] < 30.05, d
        assert wall < 20, wall
        assert tk.stats.jumps >= 1
        assert any(abs(firm / 1e9 - (d["t0"] + 30)) < 0.01 for firm, _ in up.quiets), up.quiets
        assert up.freezes == [1, -1] and not tk.page.frozen
        deadline = time.monotonic() + 5
        while up.left_pids != [p.pid] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert up.left_pids == [p.pid]


def test_an_upstream_that_does_not_jump_leaves_real_time():
    """The Timekeeper never jumps by itself: under an upstream that reports nothing on, a sleep
    takes its real time, though the host was quiescent with the sleep's deadline."""
    up = Recording(jump=False)
    with Timekeeper(upstream=up) as tk:
        t_wall = time.monotonic()
        p = spawn(tk, SLEEPER, "0.5")
        seen: set[tuple[int, int]] = set()
        while p.poll() is None:
            seen |= tk.announced_tasks()
            time.sleep(0.01)
        (out,) = finish(p)
        d = json.loads(out)
        assert 0.5 <= d["t1"] - d["t0"] < 1.5, d
        assert time.monotonic() - t_wall >= 0.5
        assert tk.stats.jumps == 0
        assert any(abs(firm / 1e9 - (d["t0"] + 0.5)) < 0.01 for firm, _ in up.quiets), up.quiets
        assert (p.pid, p.pid) in seen  # its main thread announced the sleep
    assert tk.collectives is up.collectives


def test_a_relay_timekeeper_has_no_local_collectives(tmp_path):
    from revati.timekeeper.relay import Relay

    relay = Relay(("127.0.0.1", 1), run_dir=tmp_path)
    assert relay.timekeeper.upstream is relay and relay.timekeeper.collectives is None
    assert relay.page_path == tmp_path / "clock"
    relay.stop()
