"""Yield-spinning counts as waiting (issue 3): a thread that spins on sched_yield or sleep(0)
until another thread writes (vLLM's shm_broadcast readers with TP > 1) does not hold the
clock at real speed, and sees the write at the virtual time it was made."""

from __future__ import annotations

import json

import pytest

from tests.timewarp._timewarp import run

SPIN = r'''
import json, os, sys, threading, time
how = sys.argv[1] if len(sys.argv) > 1 else "yield"
flag = []
seen = []
def spinner():
    while not flag:
        os.sched_yield() if how == "yield" else time.sleep(0)
    seen.append(time.monotonic())
t = threading.Thread(target=spinner); t.start()
t0 = time.monotonic()
for i in range(5):
    time.sleep(1.0)  # the writer: 5 virtual seconds, then the write
flag.append(1); w = time.monotonic()
t.join()
print(json.dumps({"slept": w - t0, "seen_after_write": seen[0] - w}))
'''


@pytest.mark.parametrize("how", ["yield", "sleep0"])
def test_yield_spinning_thread_lets_the_clock_jump(timekeeper, how):
    out, wall = run(timekeeper, SPIN.replace("sys.argv[1] if len(sys.argv) > 1 else \"yield\"", repr(how)))
    d = json.loads(out)
    print(how, d, f"wall {wall:.2f} s")
    assert 5.0 <= d["slept"] < 5.01
    assert 0 <= d["seen_after_write"] < 0.01  # the spin sleeps up to 0.5 ms (real) per yield
    assert timekeeper.stats.jumps >= 5
    assert wall < 4  # 5 virtual seconds; without the spin counted as waiting: 5 s of wall time
