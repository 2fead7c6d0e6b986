"""Step anatomy counters (issue 11): a program under the shim, on a Timekeeper's clock, with
constant 1 ms ops, does known GPU work, syncs, sleeps, polls, lock waits, CPU work, a yield
spin and a JIT freeze; each counter of revati_thread_anatomy must see its part, and the parts
must add up to the virtual time that the program's own clock reads measured (within 1%)."""

from __future__ import annotations

import json

import pytest

from revati.timekeeper.timekeeper import Timekeeper
from tests.timewarp._timewarp import run


@pytest.fixture
def timekeeper():
    with Timekeeper() as tk:
        yield tk

PROGRAM = r'''
import ctypes, json, os, select, threading, time
from revati.vllm_plugin import steps

lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
P = ctypes.c_void_p
lib.cudaMemsetAsync.argtypes = [P, ctypes.c_int, ctypes.c_size_t, P]
lib.cudaStreamSynchronize.argtypes = [P]
lib.revati_clock_freeze.argtypes = [ctypes.c_int]
stream, buf = P(), P()
assert lib.cudaStreamCreate(ctypes.byref(stream)) == 0
assert lib.cudaMalloc(ctypes.byref(buf), 4096) == 0
lib.cudaStreamSynchronize(stream)

def gpu(n):
    for _ in range(n):
        lib.cudaMemsetAsync(buf, 0, 4096, stream)

def spin_cpu(seconds):  # real CPU work on this thread
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass

out = {}
def part(name, fn):
    # Each counter read between two clock reads: the span lies between lo and hi.
    t0a = time.monotonic(); a = steps.thread_anatomy(); t0b = time.monotonic()
    fn()
    t1a = time.monotonic(); b = steps.thread_anatomy(); t1b = time.monotonic()
    out[name] = {"lo_ms": (t1a - t0b) * 1e3, "hi_ms": (t1b - t0a) * 1e3, "anatomy": steps.anatomy_delta(a, b)}

t0a = time.monotonic(); a_all = steps.thread_anatomy(); t0b = time.monotonic()
part("gpu_sync", lambda: (gpu(20), lib.cudaStreamSynchronize(stream)))   # 20 ms of GPU, then a sync
part("sleep", lambda: time.sleep(0.030))                                 # 30 ms virtual sleep
r, w = os.pipe()
p = select.poll(); p.register(r, select.POLLIN)
part("poll", lambda: p.poll(15))                                         # 15 ms poll timeout
lock = threading.Lock(); lock.acquire()
part("sem", lambda: lock.acquire(timeout=0.010))                         # 10 ms lock wait (a semaphore)
part("cpu", lambda: spin_cpu(0.020))                                     # 20 ms of CPU
part("overlap", lambda: (gpu(10), spin_cpu(0.004), lib.cudaStreamSynchronize(stream)))
sched_yield = ctypes.CDLL(None).sched_yield
part("yield", lambda: [sched_yield() for _ in range(60)])               # a yield-spin
def frozen():
    assert lib.revati_clock_freeze(1) == 0
    spin_cpu(0.050)
    lib.revati_clock_freeze(-1)
part("frozen", frozen)
t1a = time.monotonic(); b_all = steps.thread_anatomy(); t1b = time.monotonic()
out["all"] = {"lo_ms": (t1a - t0b) * 1e3, "hi_ms": (t1b - t0a) * 1e3, "anatomy": steps.anatomy_delta(a_all, b_all)}
print(json.dumps(out))
'''


def _sum(a: dict) -> float:
    return sum(a["ms"].values())


def test_thread_anatomy_counters_add_up(timekeeper):
    stdout, _ = run(timekeeper, PROGRAM, timeout=120, REVATI_PREDICTOR="constant:1ms")
    d = json.loads(stdout.strip().splitlines()[-1])
    for name, p in d.items():
        a = p["anatomy"]
        total = _sum(a)
        print(f"{name:9s} span {p['lo_ms']:8.3f}..{p['hi_ms']:8.3f} ms, parts {total:8.3f}: {a['ms']} "
              f"(gpu busy {a['gpu_busy_ms']:.3f}, work {a['gpu_work_ms']:.3f}, cpu {a['cpu_ms']:.3f}, "
              f"untracked {a['untracked_ms']:.3f})")
        # The parts add up, within 1%, to the span that the program's own (virtual) clock
        # measured around the counter reads.
        assert 0.99 * p["lo_ms"] - 0.01 <= total <= 1.01 * p["hi_ms"] + 0.01, (name, total, p)
        # Critical path: GPU busy + what the thread did while the GPU was idle = the span.
        exposed = sum(v - a["gpu_ms"].get(k, 0.0) for k, v in a["ms"].items())
        assert abs(a["gpu_busy_ms"] + exposed - total) <= 0.01 * total + 0.01, name
    ms = {k: v["anatomy"]["ms"] for k, v in d.items()}
    an = {k: v["anatomy"] for k, v in d.items()}
    # 20 ops of 1 ms, then a sync: the GPU was busy 20 ms, the host waited for the rest.
    assert an["gpu_sync"]["gpu_work_ms"] == 20.0
    assert 19.9 <= an["gpu_sync"]["gpu_busy_ms"] <= 20.01
    assert 15 <= ms["gpu_sync"]["gpu"] <= 22  # + the wake-up after the jump, on a loaded host
    # ... busy all along but for the wake-up after the jump (virtual time too, GPU idle)
    assert 0 <= ms["gpu_sync"]["gpu"] - an["gpu_sync"]["gpu_ms"]["gpu"] < 3.0
    # Announced waits land in their own state, for their virtual length.
    # (the deadline is taken a little before the wait begins: a preemption between the two is "run")
    assert 27 <= ms["sleep"]["sleep"] <= 33  # + the wake-up after the jump
    assert 13.5 <= ms["poll"]["poll"] <= 18
    assert 9 <= ms["sem"]["sem"] <= 13
    # CPU work is "run", and the thread's CPU clock covers it.
    assert 19.9 <= ms["cpu"]["run"] and "gpu" not in ms["cpu"]
    assert 19.5 <= an["cpu"]["cpu_ms"] <= ms["cpu"]["run"] * 1.01
    # GPU work overlapping CPU: 4 ms of CPU run while the 10 ops ran; the sync waits the rest.
    ov = an["overlap"]
    assert ov["gpu_work_ms"] == 10.0 and 9.9 <= ov["gpu_busy_ms"] <= 10.01
    # (the sync waits the 10 ms less the CPU run meanwhile, + the wake-up after the jump: 0.1 ms
    # on a quiet host, more on a loaded or slower one)
    assert ov["gpu_ms"]["run"] >= 3.9 and ms["overlap"]["gpu"] <= 10.0 - ov["gpu_ms"]["run"] + 0.5
    # Yields: after a few, an announced spin.
    assert an["yield"]["entries"].get("yield") == 1 and ms["yield"]["yield"] > 0
    # A JIT freeze: 50 ms of real CPU in about no virtual time.
    fr = an["frozen"]
    # (the Timekeeper stops the clock once it reads the FREEZE: a fraction of a ms later)
    assert fr["freezes"] == 1 and fr["frozen_real_ms"] >= 45 and ms["frozen"]["frozen"] < 2.0
    assert ms["frozen"].get("yield", 0) < 0.5  # the freeze ended the spin that went on before it
    # The thread's CPU clock, frozen work left out, covers the CPU states' time (it cannot
    # exceed it by more than the waits' own CPU) over the whole program. The yield spin's
    # sched_yield calls are CPU in its "yield" state: 0.1-1.9 ms here, more on a slower host.
    assert an["all"]["cpu_ms"] <= ms["all"]["run"] + an["yield"]["cpu_ms"] + 2.0
