"""Collectives resolved by the Timekeeper (issue 3): two ranks call the shim's NCCL directly
(ctypes), after different amounts of GPU work, and both must see the same end,
end = max(arrivals) + duration, eagerly and inside a captured CUDA graph replayed three times.
A collective that lacks a rank is the emulator's deadlock error within 10 s of wall time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from revati.timekeeper.timewarp_cli import DEADLOCK_EXIT
from tests.timewarp._timewarp import finish, spawn

# One rank: ctypes on the preloaded shim. argv: rank, socket fd (to the other rank), kernels
# before each collective, mode (eager | graph | die | hang). Prints its virtual timestamps.
RANK = r'''
import ctypes, json, os, signal, socket, sys, time
rank, fd, nk, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
P = ctypes.c_void_p
lib.ncclAllReduce.argtypes = [P, P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, P, P]
class UniqueId(ctypes.Structure):  # passed by value
    _fields_ = [("internal", ctypes.c_char * 128)]
lib.ncclCommInitRank.argtypes = [ctypes.POINTER(P), ctypes.c_int, UniqueId, ctypes.c_int]
lib.cudaMemsetAsync.argtypes = [P, ctypes.c_int, ctypes.c_size_t, P]
lib.cudaStreamSynchronize.argtypes = [P]
lib.cudaStreamBeginCapture.argtypes = [P, ctypes.c_int]
lib.cudaStreamEndCapture.argtypes = [P, ctypes.POINTER(P)]
lib.cudaGraphInstantiate.argtypes = [ctypes.POINTER(P), P, ctypes.c_ulonglong]
lib.cudaGraphLaunch.argtypes = [P, P]
lib.ncclSend.argtypes = lib.ncclRecv.argtypes = [P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, P, P]
s = socket.socket(fileno=fd)
uid = UniqueId()
if rank == 0:
    assert lib.ncclGetUniqueId(ctypes.byref(uid)) == 0
    s.sendall(ctypes.string_at(ctypes.byref(uid), 128))
else:
    data = b""
    while len(data) < 128:
        data += s.recv(128 - len(data))
    ctypes.memmove(ctypes.byref(uid), data, 128)
comm, stream, buf = P(), P(), P()
assert lib.ncclCommInitRank(ctypes.byref(comm), 2, uid, rank) == 0
assert lib.cudaStreamCreate(ctypes.byref(stream)) == 0
assert lib.cudaMalloc(ctypes.byref(buf), 4096) == 0

def barrier():
    s.sendall(b"b")
    assert s.recv(1) == b"b"

def work(n):
    for _ in range(n):
        lib.cudaMemsetAsync(buf, 0, 4096, stream)

def all_reduce():
    assert lib.ncclAllReduce(buf, buf, 1024, 7, 0, comm, stream) == 0  # float32, sum

out = {"pid": os.getpid()}
if mode == "die":
    barrier()
    os.kill(os.getpid(), signal.SIGKILL)  # rank 1 dies before its all-reduce
if mode == "hang":
    barrier()
    os.read(os.pipe()[0], 1)  # rank 1 never calls its all-reduce: blocked forever
if mode in ("eager", "die", "hang"):
    barrier()
    t0 = time.monotonic_ns()
    work(nk)
    all_reduce()
    all_reduce()  # right after: its arrival follows the first one's pending end
    lib.cudaStreamSynchronize(stream)
    out["eager"] = [t0, time.monotonic_ns()]
if mode == "p2p":  # a send and a receive between the two ranks, grouped: they start together
    barrier()
    t0 = time.monotonic_ns()
    work(nk)
    assert lib.ncclGroupStart() == 0
    assert lib.ncclSend(buf, 1024, 7, 1 - rank, comm, stream) == 0
    assert lib.ncclRecv(buf, 1024, 7, 1 - rank, comm, stream) == 0
    assert lib.ncclGroupEnd() == 0
    lib.cudaStreamSynchronize(stream)
    out["p2p"] = [t0, time.monotonic_ns()]
if mode == "graph":
    g, x = P(), P()
    assert lib.cudaStreamBeginCapture(stream, 0) == 0
    work(nk)
    all_reduce()
    work(1)
    all_reduce()
    assert lib.cudaStreamEndCapture(stream, ctypes.byref(g)) == 0
    assert lib.cudaGraphInstantiate(ctypes.byref(x), g, 0) == 0
    barrier()
    t0 = time.monotonic_ns()
    for _ in range(3):
        assert lib.cudaGraphLaunch(x, stream) == 0
    lib.cudaStreamSynchronize(stream)
    out["graph"] = [t0, time.monotonic_ns()]
print(json.dumps(out))
'''

MS = 1_000_000
# Real CPU between a rank's timestamp and its launches, and wake-up latency after a jump, count
# as virtual time (dilation 1) on this shared 2-core machine.
SLACK = 15 * MS


def _collectives(trace: Path, pid: int) -> dict[tuple, dict]:
    """The collective records of one process's trace part, by (comm, chan, seq)."""
    out = {}
    for ln in (trace.parent / (trace.name + ".parts") / f"{pid}.jsonl").read_text().splitlines():
        e = json.loads(ln)
        if e.get("cat") == "collective":
            a = e["args"]
            out[(a["comm"], a["chan"], a["seq"])] = a
    return out


def _run_pair(timekeeper, tmp_path, mode: str, kernels=(5, 10)) -> tuple[list[dict], Path]:
    trace = tmp_path / "trace.json"
    a, b = socket.socketpair()
    env = {"REVATI_PREDICTOR": "constant:1ms", "REVATI_TRACE": str(trace)}
    procs = [spawn(timekeeper, RANK, str(r), str(sk.fileno()), str(kernels[r]), mode, pass_fds=(sk.fileno(),),
                   **env) for r, sk in enumerate((a, b))]
    a.close()
    b.close()
    return [json.loads(o) for o in finish(*procs, timeout=120)], trace


def _check_resolved(trace: Path, pids: list[int], n: int) -> list[dict]:
    """Both ranks recorded the same n collectives with one end each: max(arrivals) + 1 ms."""
    ranks = [_collectives(trace, p) for p in pids]
    assert sorted(ranks[0]) == sorted(ranks[1]) and len(ranks[0]) == n, ranks
    out = []
    for key in sorted(ranks[0], key=lambda k: k[2]):
        r0, r1 = ranks[0][key], ranks[1][key]
        assert "unresolved" not in r0 and "unresolved" not in r1
        assert r0["end_ns"] == r1["end_ns"], (key, r0, r1)
        assert r0["end_ns"] == max(r0["arrival_ns"], r1["arrival_ns"]) + MS, (key, r0, r1)
        out.append({"end": r0["end_ns"], "arrivals": [r0["arrival_ns"], r1["arrival_ns"]]})
    return out


def test_eager_all_reduce_ends_agree_across_ranks(timekeeper, tmp_path):
    """Rank 0 does 5 ms of GPU work before two all-reduces, rank 1 10 ms: both end at
    max(arrivals) + 1 ms, and rank 0's sync waits for rank 1's work."""
    (p0, p1), trace = _run_pair(timekeeper, tmp_path, "eager")
    first, second = _check_resolved(trace, [p0["pid"], p1["pid"]], 2)
    for r, (p, nk) in enumerate(((p0, 5), (p1, 10))):
        t0 = p["eager"][0]
        assert t0 + nk * MS <= first["arrivals"][r] <= t0 + nk * MS + SLACK
    assert second["arrivals"] == [first["end"], first["end"]]  # each follows the pending end
    assert second["end"] == first["end"] + MS
    for p in (p0, p1):
        assert second["end"] <= p["eager"][1] <= second["end"] + SLACK
    # Causality: rank 0 finished its own work after 5 ms but saw rank 1's 10 ms.
    assert p0["eager"][1] >= p1["eager"][0] + 10 * MS + 2 * MS


def test_all_reduce_in_a_replayed_graph_ends_agree_across_ranks(timekeeper, tmp_path):
    """A captured graph (n kernels, all-reduce, 1 kernel, all-reduce; n = 5 on rank 0, 10 on
    rank 1) replayed 3 times: six collectives, each resolved across ranks; the replays end
    max(start + n) + 29 ms after they start, on both ranks."""
    (p0, p1), trace = _run_pair(timekeeper, tmp_path, "graph")
    colls = _check_resolved(trace, [p0["pid"], p1["pid"]], 6)
    m = max(p0["graph"][0] + 5 * MS, p1["graph"][0] + 10 * MS)
    assert m <= colls[0]["end"] - MS <= m + SLACK
    # Each replay: 10 ms (the slower rank) + 1 ms all-reduce + 1 ms kernel + 1 ms all-reduce.
    for i, c in enumerate(colls[1:], 1):
        assert c["end"] - colls[i - 1]["end"] == (2 * MS if i % 2 else 11 * MS)
    end = colls[-1]["end"]
    assert end == colls[0]["end"] + 28 * MS
    for p in (p0, p1):
        assert end <= p["graph"][1] <= end + SLACK


def test_grouped_send_recv_pairs_start_together_and_agree(timekeeper, tmp_path):
    """ncclGroupStart; send to the peer; receive from it; ncclGroupEnd, after 5 vs 10 ms of
    GPU work: each pair (0 -> 1, 1 -> 0) ends at max(arrivals) + 1 ms, both calls of a rank's
    group arrive at the same time (the group's start), and the stream goes on after both."""
    (p0, p1), trace = _run_pair(timekeeper, tmp_path, "p2p")
    pairs = _check_resolved(trace, [p0["pid"], p1["pid"]], 2)
    # arrivals are [rank 0's, rank 1's]: a rank's send and receive both arrive at its group's start
    assert pairs[0]["arrivals"] == pairs[1]["arrivals"]
    assert pairs[0]["end"] == pairs[1]["end"]
    for r, (p, nk) in enumerate(((p0, 5), (p1, 10))):
        t0 = p["p2p"][0]
        assert t0 + nk * MS <= pairs[0]["arrivals"][r] <= t0 + nk * MS + SLACK
    end = pairs[0]["end"]
    for p in (p0, p1):
        assert end <= p["p2p"][1] <= end + SLACK


PAIR = r'''
import os, socket, subprocess, sys
a, b = socket.socketpair()
code, mode = sys.argv[1], sys.argv[2]
procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(s.fileno()), "5", mode if r else "eager"],
                          pass_fds=(s.fileno(),)) for r, s in enumerate((a, b))]
for p in procs:
    p.wait()
print("unreachable")
'''


def _exec_pair(mode: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--timewarp", "--predictor", "constant:1ms",
                        "--", sys.executable, "-c", PAIR, RANK, mode], capture_output=True, text=True, timeout=90)
    return p, time.monotonic() - t0


def test_all_reduce_lacking_a_killed_rank_is_a_deadlock():
    """Rank 1 is killed before its all-reduce; rank 0 syncs on its own: an error at once that
    names rank 0's waiting thread and the collective (which rank arrived, which is gone)."""
    p, wall = _exec_pair("die")
    print(p.stderr)
    assert p.returncode == DEADLOCK_EXIT
    assert "unreachable" not in p.stdout
    assert "lacks rank 1" in p.stderr and "exited" in p.stderr
    waits = [ln for ln in p.stderr.splitlines() if ln.startswith("  pid ")]
    assert any("waits for the end of a collective" in ln for ln in waits), waits
    colls = [ln for ln in p.stderr.splitlines() if ln.startswith("  all_reduce on comm ")]
    assert colls and "seq 0: arrived rank 0 (pid" in colls[0] and "missing rank 1 (pid" in colls[0], colls
    assert wall < 10 + 5  # start-up, then at once


def test_all_reduce_lacking_a_blocked_rank_is_a_deadlock():
    """Rank 1 blocks forever before its all-reduce: when the whole deployment has stalled, the
    error names both ranks' threads and the collective that lacks rank 1."""
    p, wall = _exec_pair("hang")
    print(p.stderr)
    assert p.returncode == DEADLOCK_EXIT
    assert "every thread" in p.stderr
    colls = [ln for ln in p.stderr.splitlines() if ln.startswith("  all_reduce on comm ")]
    assert colls and "missing rank 1" in colls[0] and "has not called it" in colls[0], colls
    assert wall < 10 + 10
