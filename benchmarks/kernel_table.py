"""The kernels of a run by predicted GPU time, from its Perfetto trace: which kernels a model
launches that no predictor family describes (docs/models.md).

    .venv/bin/python benchmarks/kernel_table.py runs/NAME/trace.json [--top 12] [--json OUT]

Needs a run with `emulation.trace: true` (or `revati exec --trace`). Every kernel event
carries its family (the trace's `cat`, shim/src/kernels.c). The shim describes kernels of the
families in GEOMETRY_FAMILIES by their launch geometry only (shim/src/predictor_client.c,
describe()): those are the unmapped kernels whatever the step. Kernels of the other families
are mapped when the semantic layer has handed the shim the model and the step's batch; the
trace does not say per event whether it had, so the run's coverage figure (report.json,
emulation.predictor.coverage) stays the reference.

Graph replays appear once per replayed node, so a kernel's time is over the whole run:
warm-up, CUDA-graph capture and the benchmark. A collective's event runs from its arrival on
the stream to its end (max of the ranks' arrivals + its predicted duration), so it includes
the wait for the other ranks: it is listed by kind, apart from the kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

# Kernel families that describe() always sends as launch-geometry elementwise ops.
GEOMETRY_FAMILIES = frozenset({"triton", "elementwise", "reduce", "unknown", "sampler", "copy_kernel", "gemm_kernel"})


def events(path: Path):
    """The trace's complete ("X") events: a merged trace ({"traceEvents": [...]}, what
    `revati run` writes) or the shim's per-process parts (one event per line)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(64)
        f.seek(0)
        if head.lstrip().startswith('{"traceEvents"') or head.lstrip().startswith("{\n"):
            for e in json.load(f).get("traceEvents", []):
                if e.get("ph") == "X":
                    yield e
            return
        for line in f:
            line = line.strip().rstrip(",")
            if not line.startswith("{") or '"ph":"X"' not in line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def kernel_name(e: dict, width: int = 110) -> str:
    """The event's name with enough of its template to tell kernels apart (the trace's name
    stops at the first '<': every CUTLASS kernel is 'void cutlass::device_kernel')."""
    d = e.get("args", {}).get("demangled") or e.get("name", "?")
    d = d.split("(", 1)[0] if not d.startswith("void") else d
    return d if len(d) <= width else d[: width - 3] + "..."


def table(path: Path) -> dict:
    by_kind: dict[str, float] = defaultdict(float)
    by_family: dict[str, float] = defaultdict(float)
    kernels: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events(path):
        cat, dur = e.get("cat", "?"), float(e.get("dur", 0.0))
        if cat in ("gemm", "memcpy", "memset", "collective"):
            by_kind[cat] += dur
            continue
        by_kind["kernel"] += dur
        by_family[cat] += dur
        k = kernels[(cat, kernel_name(e))]
        k[0] += dur
        k[1] += 1
    total = sum(by_kind.values())
    geometry = sum(v for f, v in by_family.items() if f in GEOMETRY_FAMILIES)
    rows = [{"family": f, "kernel": n, "us": round(us, 1), "launches": c,
             "share": us / total if total else 0.0}
            for (f, n), (us, c) in sorted(kernels.items(), key=lambda kv: -kv[1][0])]
    return {"trace": str(path), "total_us": round(total, 1),
            "by_kind_us": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "by_family_us": {k: round(v, 1) for k, v in sorted(by_family.items(), key=lambda kv: -kv[1])},
            "geometry_share": geometry / total if total else 0.0,
            "geometry_share_without_collectives": (geometry / (total - by_kind.get("collective", 0.0))
                                                   if total > by_kind.get("collective", 0.0) else 0.0),
            "geometry_kernels": [r for r in rows if r["family"] in GEOMETRY_FAMILIES],
            "kernels": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", type=Path, help="write the whole table here")
    a = ap.parse_args(argv)
    t = table(a.trace)
    print(f"# .venv/bin/python benchmarks/kernel_table.py {a.trace} --top {a.top}")
    print(f"predicted GPU time {t['total_us'] / 1e3:.1f} ms; by kind: " +
          ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in t["by_kind_us"].items()))
    print("kernels by family: " + ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in t["by_family_us"].items()))
    print(f"launch-geometry families ({', '.join(sorted(GEOMETRY_FAMILIES))}): "
          f"{100 * t['geometry_share']:.1f}% of predicted GPU time "
          f"({100 * t['geometry_share_without_collectives']:.1f}% of it without the collectives); top kernels:")
    for r in t["geometry_kernels"][: a.top]:
        print(f"  {100 * r['share']:5.1f}%  {r['us'] / 1e3:8.2f} ms  {r['launches']:7d}x  [{r['family']}] {r['kernel']}")
    print("top kernels of the other families:")
    for r in [r for r in t["kernels"] if r["family"] not in GEOMETRY_FAMILIES][: a.top]:
        print(f"  {100 * r['share']:5.1f}%  {r['us'] / 1e3:8.2f} ms  {r['launches']:7d}x  [{r['family']}] {r['kernel']}")
    if a.json:
        a.json.write_text(json.dumps(t, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
