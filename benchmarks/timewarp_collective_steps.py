"""Benchmark: decode-like steps of two ranks with collectives inside a replayed CUDA graph.

Each rank captures a graph of 64 x (5 memsets + an all-reduce) (389 ops, about a Llama-3-8B
decode step at TP=2 with constant 1 ms ops), then per step: CPU_MS of busy CPU, one replay, an
event record and sync, and a hand-off from rank 0 to rank 1 over a socket. Prints each rank's
virtual seconds, the wall seconds, and the Timekeeper's jumps.
Reproduce with:  .venv/bin/python benchmarks/timewarp_collective_steps.py [STEPS] [CPU_MS]
"""

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
rank, fd, steps, cpu_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
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
lib.cudaEventRecord.argtypes = [P, P]
lib.cudaEventSynchronize.argtypes = [P]
s = socket.socket(fileno=fd)
uid = UniqueId()
if rank == 0:
    lib.ncclGetUniqueId(ctypes.byref(uid)); s.sendall(ctypes.string_at(ctypes.byref(uid), 128))
else:
    data = b""
    while len(data) < 128: data += s.recv(128 - len(data))
    ctypes.memmove(ctypes.byref(uid), data, 128)
comm, st, buf, ev = P(), P(), P(), P()
lib.ncclCommInitRank(ctypes.byref(comm), 2, uid, rank)
lib.cudaStreamCreate(ctypes.byref(st)); lib.cudaMalloc(ctypes.byref(buf), 4096); lib.cudaEventCreate(ctypes.byref(ev))
g, x = P(), P()
lib.cudaStreamBeginCapture(st, 0)
for _ in range(64):
    for _ in range(5): lib.cudaMemsetAsync(buf, 0, 64, st)
    lib.ncclAllReduce(buf, buf, 1024, 7, 0, comm, st)
lib.cudaStreamEndCapture(st, ctypes.byref(g)); lib.cudaGraphInstantiate(ctypes.byref(x), g, 0)
s.sendall(b"b"); s.recv(1)
v0 = time.monotonic_ns()
for i in range(steps):
    t = time.thread_time()
    while time.thread_time() - t < cpu_ms / 1e3: pass
    lib.cudaGraphLaunch(x, st)
    lib.cudaEventRecord(ev, st)
    lib.cudaEventSynchronize(ev)
    if rank == 0: s.sendall(b"s")  # rank 0 tells rank 1 the step is done (like the engine's hand-off)
    else: s.recv(1)
print(json.dumps({"virtual_s": (time.monotonic_ns() - v0) / 1e9}))
'''
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
cpu = sys.argv[2] if len(sys.argv) > 2 else "30"
print(f"command: .venv/bin/python benchmarks/timewarp_collective_steps.py {steps} {cpu}   (host: {os.cpu_count()} cores, "
      f"load {' '.join(open('/proc/loadavg').read().split()[:3])})")
tk = Timekeeper().start()
env = emulator_env("h100-sxm", offline_hub=False, predictor="constant:1ms"); env.update(tk.env())
a, b = socket.socketpair()
t0 = time.monotonic()
procs = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(sk.fileno()), str(steps), cpu], env=env, pass_fds=(sk.fileno(),), stdout=subprocess.PIPE, text=True) for r, sk in enumerate((a, b))]
a.close(); b.close()
outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
wall = time.monotonic() - t0
print(f"rank 0 {outs[0]['virtual_s']:.3f} virtual s, rank 1 {outs[1]['virtual_s']:.3f} virtual s, in {wall:.2f} wall s "
      f"(both processes' start-up included); {tk.stats.jumps} jumps skipping {tk.stats.jumped_ns / 1e9:.3f} s")
tk.stop()
