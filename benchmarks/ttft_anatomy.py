"""Where a request's TTFT goes, from one `revati run` folder: the arrival, the engine step that ran
its prefill, and the first token's arrival at the client.

    .venv/bin/python benchmarks/ttft_anatomy.py RUN_DIR [--from-s 20]

Each request is matched to the step that ran its prefill by order: vLLM schedules waiting
requests first come, first served, so the n-th prefill entry of the step log (a sequence with
more than one new token) is the n-th request by arrival, after the warm-up's and the probe's
prefills. The match is checked: its step must start after the request's arrival and end before
its first token; the count of requests that fail the check is printed (0 means the order held).
Virtual times throughout (the load generator's clock is the Timekeeper's, as the engine's).
Rank 0's steps only (the ranks of a TP group run the same steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def anatomy(run_dir: Path, from_s: float) -> tuple[dict[str, list[float]], int]:
    bench = json.loads((run_dir / "bench.json").read_text())
    starts, ttfts = bench["start_times"], bench["ttfts"]
    steps = [json.loads(x) for x in (run_dir / "steps.replica0.jsonl").read_text().splitlines() if x.strip()]
    steps = [s for s in steps if s.get("rank", 0) == 0 and s.get("t_end")]
    prefills = [n for n, s in enumerate(steps) for q in s["query_lens"] if q > 1]
    order = sorted((i for i in range(len(starts)) if starts[i] is not None), key=lambda i: starts[i])
    t0 = starts[order[0]]
    first = next((k for k, n in enumerate(prefills) if steps[n]["t_start"] >= t0 - 1e-3), None)
    if first is None:
        raise SystemExit(f"{run_dir}: no prefill step after the first request")
    parts: dict[str, list[float]] = {k: [] for k in (
        "arrival -> its prefill step starts", "its prefill step", "that step ends -> first token",
        "the next step ends -> first token", "TTFT")}
    mismatched = 0
    for n, i in enumerate(order):
        if first + n >= len(prefills) or ttfts[i] is None:
            break
        k = prefills[first + n]
        s, arrival = steps[k], starts[i]
        token = arrival + ttfts[i]
        if s["t_start"] < arrival - 1e-3 or s["t_end"] > token + 1e-3:
            mismatched += 1
            continue
        if arrival - t0 < from_s or k + 1 >= len(steps):
            continue
        ms = 1e3
        parts["arrival -> its prefill step starts"].append((s["t_start"] - arrival) * ms)
        parts["its prefill step"].append((s["t_end"] - s["t_start"]) * ms)
        parts["that step ends -> first token"].append((token - s["t_end"]) * ms)
        parts["the next step ends -> first token"].append((token - steps[k + 1]["t_end"]) * ms)
        parts["TTFT"].append(ttfts[i] * ms)
    return parts, mismatched


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--from-s", type=float, default=20.0,
                    help="leave out the requests that arrive before this many seconds (the warm-up)")
    a = ap.parse_args(argv)
    parts, mismatched = anatomy(a.run_dir, a.from_s)
    n = len(parts["TTFT"])
    print(f"{a.run_dir}: {n} requests from {a.from_s:g} s on; {mismatched} failed the order check")
    for name, xs in parts.items():
        if xs:
            print(f"  {name:36s} median {statistics.median(xs):7.2f} ms  mean {statistics.mean(xs):7.2f} ms")
    print("reproduce: .venv/bin/python benchmarks/ttft_anatomy.py " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
