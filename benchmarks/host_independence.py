"""Benchmark: the same spec's TTFT and TPOT on 2 cores (several runs) and pinned to 1 core.

An emulator's answer must not depend on how busy its host is (issue 11): this runs SPEC
`--runs` times on every core and `--one-core` times pinned to one core (taskset), and prints
the mean and median TTFT and TPOT of each run, the spread between runs, and the 1-core vs
2-core difference of the medians.

    .venv/bin/python benchmarks/host_independence.py examples/validation/llama-2-7b-general-stage0.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(spec: str, out: Path, cpus: str | None) -> dict:
    cmd = [str(REPO / ".venv/bin/revati"), "run", spec, "--out", str(out)]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    r = json.loads((out / "report.json").read_text())
    return {k: r[k] for k in ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms")} | {
        "load": os.getloadavg()[0], "cpus": cpus or "all"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--runs", type=int, default=3, help="runs on every core")
    ap.add_argument("--one-core", type=int, default=1, help="runs pinned to one core")
    ap.add_argument("--out", default="runs/bench-host-independence")
    a = ap.parse_args()
    print(f"command: .venv/bin/python benchmarks/host_independence.py {a.spec} --runs {a.runs} "
          f"--one-core {a.one_core}")
    print(f"host: {os.cpu_count()} cores, load {os.getloadavg()}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    core = str(min(os.sched_getaffinity(0)))
    rows = [run(a.spec, out / f"all-{i}", None) for i in range(a.runs)]
    rows += [run(a.spec, out / f"one-{i}", core) for i in range(a.one_core)]
    for r in rows:
        print(f"  cpus {r['cpus']:>3}: TTFT mean {r['mean_ttft_ms']:.2f} median {r['median_ttft_ms']:.2f} ms | "
              f"TPOT mean {r['mean_tpot_ms']:.2f} median {r['median_tpot_ms']:.2f} ms | load {r['load']:.1f}")
    for key in ("median_ttft_ms", "median_tpot_ms"):
        two = [r[key] for r in rows if r["cpus"] == "all"]
        one = [r[key] for r in rows if r["cpus"] != "all"]
        spread = (max(two) - min(two)) / statistics.median(two) if two else float("nan")
        diff = (statistics.median(one) - statistics.median(two)) / statistics.median(two) if one and two else float("nan")
        print(f"{key}: spread over {len(two)} runs {100 * spread:.1f}%; 1 core vs all {100 * diff:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
