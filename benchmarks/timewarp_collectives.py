"""Benchmark: the cost of a collective resolved by the Timekeeper.

Two ranks call the shim's NCCL directly (ctypes, no torch) under a constant 1 ms predictor:
  A. N eager all-reduces back to back, then one sync: launch cost per call (thread CPU time,
     which the time warp counts as virtual time at dilation 1), warp off vs on;
  B. N x (all-reduce, stream sync): virtual time per iteration beyond the 1 ms all-reduce (the
     launch, the RESOLVE round trip and the wake-up after the jump);
  C. a CUDA graph of 64 all-reduces (the count of a Llama-3-8B forward at TP=2) replayed R
     times, then a sync: launch cost per replay (one ARRIVE batch of 64 arrivals).
Reproduce with:  .venv/bin/python benchmarks/timewarp_collectives.py [N] [R]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from revati.launch.env import emulator_env
from revati.timekeeper.timekeeper import Timekeeper

RANK = r'''
import ctypes, json, os, socket, sys, time
rank, fd, n, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
P = ctypes.c_void_p
class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * 128)]
lib.ncclCommInitRank.argtypes = [ctypes.POINTER(P), ctypes.c_int, UniqueId, ctypes.c_int]
lib.ncclAllReduce.argtypes = [P, P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, P, P]
lib.cudaStreamSynchronize.argtypes = [P]
lib.cudaMemsetAsync.argtypes = [P, ctypes.c_int, ctypes.c_size_t, P]
lib.cudaStreamBeginCapture.argtypes = [P, ctypes.c_int]
lib.cudaStreamEndCapture.argtypes = [P, ctypes.POINTER(P)]
lib.cudaGraphInstantiate.argtypes = [ctypes.POINTER(P), P, ctypes.c_ulonglong]
lib.cudaGraphLaunch.argtypes = [P, P]
s = socket.socket(fileno=fd)
uid = UniqueId()
if rank == 0:
    lib.ncclGetUniqueId(ctypes.byref(uid))
    s.sendall(ctypes.string_at(ctypes.byref(uid), 128))
else:
    data = b""
    while len(data) < 128:
        data += s.recv(128 - len(data))
    ctypes.memmove(ctypes.byref(uid), data, 128)
comm, st, buf = P(), P(), P()
lib.ncclCommInitRank(ctypes.byref(comm), 2, uid, rank)
lib.cudaStreamCreate(ctypes.byref(st))
lib.cudaMalloc(ctypes.byref(buf), 4096)
ar = lambda: lib.ncclAllReduce(buf, buf, 1024, 7, 0, comm, st)
def barrier():
    s.sendall(b"b"); assert s.recv(1) == b"b"
out = {}
barrier()
c0 = time.thread_time_ns()
for _ in range(n):
    lib.cudaMemsetAsync(buf, 0, 64, st)
out["memset_cpu_us"] = (time.thread_time_ns() - c0) / n / 1e3
lib.cudaStreamSynchronize(st)
barrier()
c0 = time.thread_time_ns()
for _ in range(n):
    ar()
out["allreduce_cpu_us"] = (time.thread_time_ns() - c0) / n / 1e3
lib.cudaStreamSynchronize(st)
barrier()
v0 = time.monotonic_ns()
for _ in range(n):
    ar()
    lib.cudaStreamSynchronize(st)
out["sync_iter_virtual_us_beyond_1ms"] = ((time.monotonic_ns() - v0) / n - 1e6) / 1e3
g, x = P(), P()
lib.cudaStreamBeginCapture(st, 0)
for _ in range(64):
    ar()
lib.cudaStreamEndCapture(st, ctypes.byref(g))
lib.cudaGraphInstantiate(ctypes.byref(x), g, 0)
barrier()
c0 = time.thread_time_ns()
for _ in range(reps):
    lib.cudaGraphLaunch(x, st)
out["replay64_cpu_us"] = (time.thread_time_ns() - c0) / reps / 1e3
c0 = time.thread_time_ns()
lib.cudaStreamSynchronize(st)
out["sync_after_replays_cpu_us"] = (time.thread_time_ns() - c0) / 1e3
print(json.dumps(out))
'''


def run(timewarp: bool, n: int, reps: int) -> tuple[list[dict], float, Timekeeper | None]:
    tk = Timekeeper().start() if timewarp else None
    env = emulator_env("h100-sxm", offline_hub=False, predictor="constant:1ms")
    if tk:
        env.update(tk.env())
    a, b = socket.socketpair()
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(sk.fileno()), str(n), str(reps)], env=env,
                              pass_fds=(sk.fileno(),), stdout=subprocess.PIPE, text=True)
             for r, sk in enumerate((a, b))]
    a.close()
    b.close()
    outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    wall = time.monotonic() - t0
    if tk:
        tk.stop()
    return outs, wall, tk


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(f"command: .venv/bin/python benchmarks/timewarp_collectives.py {n} {reps}   (host: {os.cpu_count()} cores, "
          f"load {' '.join(open('/proc/loadavg').read().split()[:3])})")
    for tw in (False, True):
        outs, wall, tk = run(tw, n, reps)
        print(f"--- time warp {'on' if tw else 'off'} ({wall:.1f} wall s for both ranks)")
        for k in outs[0]:
            print(f"  {k:34s} rank 0 {outs[0][k]:9.1f}   rank 1 {outs[1][k]:9.1f}")
        if tk:
            c = tk.collectives
            print(f"  Timekeeper: {c.arrivals} arrivals, {c.resolved} collectives resolved, {tk.stats.jumps} jumps")


if __name__ == "__main__":
    main()
