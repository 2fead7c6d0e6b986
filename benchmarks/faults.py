"""Faults injected into `revati run` and how it ended: by process kind, the runs that ended as a
failed run (exit 4, the right condition, nothing left running) and the wall time from the fault
to the clean exit (p50, max).

Each run is the fake deployment of tests/run/fake_deployment.py (the real revati run, Timekeeper,
sidecar, watchdog and report around a cheap stand-in for vLLM's process tree), the fault at a
seeded random point of the load.

    .venv/bin/python benchmarks/faults.py --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "run"))

import fake_deployment  # noqa: E402
from test_faults import CASES  # noqa: E402

from revati.run.faults import FAULT_EXIT_CODE  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="runs per kind of fault (seeds 0..N-1)")
    args = ap.parse_args()
    times: list[float] = []
    rows = []
    for kind, how, cond, status in CASES:
        ok, injected, spans, notes = 0, 0, [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory(prefix="revati-fault-") as d:
                o = fake_deployment.inject(kind, how, seed, d)
                if o.injected_at_s is None:  # the load ended first (rc 0): not a trial
                    notes.append(f"seed {seed}: the load ended before the fault (rc {o.rc})")
                    continue
                injected += 1
                good = (o.injected_at_s is not None and o.rc == FAULT_EXIT_CODE and not o.survivors
                        and f"FAILED: {cond}" in o.output and status in o.output)
                if good:
                    rep = o.report
                    good = rep.get("outcome") == "failed" and rep["failure"]["condition"] == cond
                if o.fault_to_exit_s is not None:
                    spans.append(o.fault_to_exit_s)
                ok += good
                if not good:  # a fault that did not end as a failed run
                    notes.append(f"seed {seed}: rc {o.rc}, survivors {o.survivors}, injected "
                                 f"{o.injected_at_s}")
        times += spans
        rows.append((f"{kind} {how}", cond, f"{ok}/{injected}",
                     f"{statistics.median(spans):.2f}" if spans else "-", f"{max(spans):.2f}" if spans else "-",
                     "; ".join(notes)))
    print(f"{'fault':<18} {'condition':<18} {'ended as failed/injected':>8} {'p50 s':>6} {'max s':>6}")
    for r in rows:
        print(f"{r[0]:<18} {r[1]:<18} {r[2]:>8} {r[3]:>6} {r[4]:>6}  {r[5]}")
    if times:
        print(f"all: {len(times)} faults, fault to clean exit p50 {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s")
    print(f"command: .venv/bin/python benchmarks/faults.py --seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
