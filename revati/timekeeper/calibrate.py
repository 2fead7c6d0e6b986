"""Dilation calibration (`--dilation auto`): a CPU-bound reference workload, timed here and
on a typical GPU-server CPU. d = (time here) / (time on the server): CPU work then counts
1/d of its CPU time, as if this machine's CPU were the server's.

The time is the workload's *thread CPU time* (best of 15 passes), not its wall time: queueing
for a core is the contention governor's business (governor.py), and a wall-time reading on a
loaded 2-core host measured the load, not the CPU (0.158 s wall for 0.024-0.047 s of CPU).
The best pass is the uncontended per-thread speed; passes vary up to 2x here (a busy SMT
sibling, cache pollution by other jobs), and the best of 15 of ~25 ms passes is stable to a few
percent.

Which reference: a GPU host's own measurement when one was recorded (`--record NAME
--gpu-server` on that host), else the default target reference in references.json, marked
`target_default`: a current server CPU of the class that H100 hosts use (AMD EPYC 9004 'Genoa',
Zen 4; Intel Sapphire Rapids Xeons run CPython at a similar per-thread speed). That default is
an assumption about the target, stated in every report, not a measurement of a GPU host.

The workload is single-threaded pure Python shaped like a serving control plane's work
(dict and list churn, sorting, string building, JSON round trips): the CPU share of a vLLM
step is mostly CPython interpreting the scheduler, the model runner's input preparation and
the detokenizer. Run `python -m revati.timekeeper.calibrate` to time it (best of 5), and
`--record NAME --gpu-server` on a GPU host to add that host to references.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REFERENCES = Path(__file__).with_name("cpu_references.json")


def workload() -> int:
    """One pass of the reference workload (about 0.1-0.3 s on current server CPUs)."""
    acc = 0
    for step in range(40):
        reqs = {f"req-{i}": {"id": i, "tokens": list(range(i % 64)), "prio": (i * 7919) % 101} for i in range(400)}
        order = sorted(reqs.values(), key=lambda r: (r["prio"], r["id"]))
        batch = [r for r in order if len(r["tokens"]) % 3 != 1][:256]
        positions = [len(r["tokens"]) + step for r in batch]
        text = " ".join(f"{r['id']}:{p}" for r, p in zip(batch, positions))
        blob = json.loads(json.dumps({"batch": [r["id"] for r in batch], "text": text}))
        acc += len(blob["text"]) + sum(positions)
    return acc


def measure(repeats: int = 15) -> float:
    """Best thread CPU time of the workload over repeats (seconds)."""
    best = float("inf")
    workload()  # warm-up
    for _ in range(repeats):
        c0 = time.thread_time()
        workload()
        best = min(best, time.thread_time() - c0)
    return best


def load_references() -> list[dict]:
    return json.loads(REFERENCES.read_text())["references"]


def reference() -> dict:
    """The target host's reference: a recorded GPU host, else the documented default."""
    refs = load_references()
    servers = [r for r in refs if r.get("gpu_server")]
    if servers:
        return servers[-1]
    defaults = [r for r in refs if r.get("target_default")]
    if not defaults:
        raise LookupError(f"{REFERENCES} has no GPU-server reference and no target_default: run "
                          "`python -m revati.timekeeper.calibrate --record NAME --gpu-server` on a GPU host, "
                          "or pass a number as the dilation")
    return defaults[-1]


def auto_dilation(here_s: float | None = None) -> tuple[float, str]:
    """(d, explanation): this host's per-thread CPU speed against the target's reference."""
    ref = reference()
    here = measure() if here_s is None else here_s
    d = here / ref["seconds"]
    kind = "a GPU host's measurement" if ref.get("gpu_server") else "the default target reference, not a GPU host's measurement"
    return d, (f"dilation auto = {d:.3f}: the reference workload takes {here * 1e3:.1f} ms of CPU here vs "
               f"{ref['seconds'] * 1e3:.1f} ms on {ref['name']} ({ref['cpu']}; {kind})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", metavar="NAME", help="add this machine's time to the references")
    ap.add_argument("--gpu-server", action="store_true", help="the recorded machine is a GPU server's host")
    a = ap.parse_args(argv)
    t = measure()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(json.dumps({"seconds": round(t, 6), "cpu": cpu, "python": platform.python_version()}))
    if a.record:
        data = json.loads(REFERENCES.read_text())
        data["references"].append({"name": a.record, "cpu": cpu, "seconds": round(t, 6),
                                   "python": platform.python_version(), "gpu_server": a.gpu_server,
                                   "how": "python -m revati.timekeeper.calibrate --record: thread CPU, best of 15"})
        REFERENCES.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
