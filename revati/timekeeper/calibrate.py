"""Dilation calibration (`--dilation auto`): a CPU-bound reference workload, timed here and
on a typical GPU-server CPU. d = (time here) / (time on the server): CPU work then counts
1/d of its wall time, as if this machine's CPU were the server's.

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


def measure(repeats: int = 5) -> float:
    """Best wall time of the workload over repeats (seconds)."""
    best = float("inf")
    workload()  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        workload()
        best = min(best, time.perf_counter() - t0)
    return best


def load_references() -> list[dict]:
    return json.loads(REFERENCES.read_text())["references"]


def auto_dilation(here_s: float | None = None) -> tuple[float, str]:
    """(d, explanation) against the GPU-server reference. Raises LookupError without one."""
    servers = [r for r in load_references() if r.get("gpu_server")]
    if not servers:
        raise LookupError(
            "--dilation auto needs the reference workload timed on a GPU-server CPU, and "
            f"{REFERENCES} has none yet: run `python -m revati.timekeeper.calibrate --record NAME "
            "--gpu-server` on a GPU host (see docs/timewarp.md), or pass --dilation D")
    ref = servers[0]
    here = measure() if here_s is None else here_s
    d = here / ref["seconds"]
    return d, (f"dilation {d:.3f}: reference workload {here * 1e3:.1f} ms here vs "
               f"{ref['seconds'] * 1e3:.1f} ms on {ref['name']} ({ref['cpu']})")


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
                                   "how": "python -m revati.timekeeper.calibrate --record, best of 5"})
        REFERENCES.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
