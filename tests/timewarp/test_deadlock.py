"""Emulated deadlocks become errors (issue 3): when every thread of the deployment is blocked
with no virtual deadline to jump to, the Timekeeper stops the run within 10 s of wall time,
names each waiting thread and what it waits on, and `revati exec` exits non-zero."""

from __future__ import annotations

import subprocess
import sys
import time

from revati.timekeeper.timewarp_cli import DEADLOCK_EXIT

# Two processes, each reading a pipe the other writes only after its own read: a planted cycle.
PLANTED = r'''
import os, sys, time
a_r, a_w = os.pipe(); b_r, b_w = os.pipe()
time.sleep(1.0)  # virtual: one jump before the cycle closes
if os.fork() == 0:
    os.read(b_r, 1); os.write(a_w, b"x"); os._exit(0)
os.read(a_r, 1); os.write(b_w, b"y")
print("unreachable")
'''

# Two ranks meet at a barrier; rank 1 is killed before it gets there, so rank 0 waits forever.
KILLED_RANK = r'''
import multiprocessing as mp, os, signal, time
def rank1(barrier):
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)  # dies before the barrier
    barrier.wait()
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    p = ctx.Process(target=rank1, args=(barrier,)); p.start()
    p.join()  # the rank is gone: not a deadlock yet
    barrier.wait()  # rank 0: waits for a dead rank, forever
    print("unreachable")
'''


def _exec(code: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--timewarp", "--predictor", "constant:1ms",
                        "--", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return p, time.monotonic() - t0


def test_planted_deadlock_is_an_error_naming_the_waiters():
    p, wall = _exec(PLANTED)
    print(p.stderr)
    assert p.returncode == DEADLOCK_EXIT
    assert "unreachable" not in p.stdout
    assert "deadlock" in p.stderr
    waits = [ln for ln in p.stderr.splitlines() if ln.startswith("  pid ")]
    # both processes' main threads, blocked reading their pipes
    assert sum("read(fd" in ln and "pipe:[" in ln for ln in waits) == 2, waits
    assert wall < 1.0 + 10 + 5  # start-up, then within 10 s of the stall


def test_killed_rank_is_an_error_naming_the_waiter():
    p, wall = _exec(KILLED_RANK)
    print(p.stderr)
    assert p.returncode == DEADLOCK_EXIT
    assert "unreachable" not in p.stdout
    waits = [ln for ln in p.stderr.splitlines() if ln.startswith("  pid ")]
    assert waits and any("futex(" in ln for ln in waits), waits
    assert wall < 10 + 5
