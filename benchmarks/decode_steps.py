"""Benchmark: a model's emulated decode step at batch 1, 32 and 128 (docs/models.md).

For each SPEC (a `revati run` spec, e.g. examples/models/qwen3-14b.yaml) it runs one short
deployment of the same model, part, TP and engine: `--batch-max` requests sent at once, prompts
of `--prompt` tokens and outputs spread uniformly over 1 .. 2 x `--output` tokens (`ignoreEos`),
so the decode batch falls from `--batch-max` to 1 as the requests finish, one run covering
every batch size. From rank 0's step log (steps.replica0.jsonl) it takes the decode-only steps
(no prefill in the step) and prints, per asked batch size, the median virtual step time of the
steps whose batch is within 10% below it (exactly 1 for batch 1), their count and their median
context length, and the command.

    .venv/bin/python benchmarks/decode_steps.py examples/models/qwen3-14b.yaml [more specs]

The step time is virtual time: predicted GPU time plus the engine's CPU time on the critical
path, as `revati explain` splits it. A single run per model; the steps of one batch size are
near-identical (the predictor is deterministic), the context grows along the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from revati.run.explain import bench_start  # noqa: E402


def decode_spec(spec: dict, batch_max: int, prompt: int, output: int) -> dict:
    s = copy.deepcopy(spec)
    s["metadata"]["name"] = f"{s['metadata']['name']}-decode-steps"
    args = s["spec"].setdefault("engine", {}).setdefault("args", {})
    args["max-num-seqs"] = max(int(args.get("max-num-seqs", 0) or 0), batch_max)
    s["spec"]["workload"] = {
        "dataset": {"type": "random", "inputLen": prompt, "outputLen": output, "rangeRatio": 0.99},
        "arrival": {"process": "constant", "maxConcurrency": batch_max},
        "numPrompts": batch_max, "ignoreEos": True, "seed": 0}
    s["spec"].setdefault("emulation", {}).pop("trace", None)
    return s


def steps_by_batch(steps_file: Path, since: float | None = None) -> dict[int, list[tuple[float, float]]]:
    """Decode-only steps of rank 0 that began at or after `since` (the benchmark's first request:
    vLLM's warm-up and the load generator's probe are not the load): batch -> [(virtual ms,
    mean context)]."""
    out: dict[int, list[tuple[float, float]]] = {}
    for line in steps_file.read_text().splitlines():
        if not line.strip():
            continue
        st = json.loads(line)
        if since is not None and st.get("t_start", st.get("t", 0.0)) < since:
            continue
        if st.get("num_prefill", 0) or not st.get("num_decode") or st.get("dur_ms") is None:
            continue
        ctx = st.get("seq_lens") or [0]
        out.setdefault(int(st["num_decode"]), []).append((float(st["dur_ms"]), sum(ctx) / len(ctx)))
    return out


def summarize(by_batch: dict[int, list[tuple[float, float]]], batches: list[int]) -> dict[int, dict]:
    res = {}
    for b in batches:
        lo = b if b == 1 else int(b * 0.9) + 1
        pts = [p for n, v in by_batch.items() if lo <= n <= b for p in v]
        res[b] = ({"steps": len(pts), "median_ms": statistics.median(p[0] for p in pts),
                   "context": statistics.median(p[1] for p in pts)} if pts else {"steps": 0})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--output", type=int, default=96, help="mean output tokens (spread 1 .. 2x)")
    ap.add_argument("--out", default="runs/bench-decode-steps")
    a = ap.parse_args()
    batches = sorted(int(x) for x in a.batches.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in a.specs:
        spec = decode_spec(yaml.safe_load(Path(path).read_text()), batches[-1], a.prompt, a.output)
        name = spec["metadata"]["name"]
        spec_path = out / f"{name}.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        run_dir = out / name
        cmd = [str(REPO / ".venv/bin/revati"), "run", str(spec_path), "--out", str(run_dir)]
        print(f"== {path}: {' '.join(cmd)}", flush=True)
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
        steps = run_dir / "steps.replica0.jsonl"
        if rc != 0 or not steps.exists():
            print(f"   failed (exit {rc}); see {out / (name + '.log')}", flush=True)
            rows.append({"spec": path, "error": f"exit {rc}"})
            continue
        res = summarize(steps_by_batch(steps, bench_start(run_dir)), batches)
        rows.append({"spec": path, "model": spec["spec"]["model"], "batches": res})
        print("   " + "; ".join(f"batch {b}: " + (f"{r['median_ms']:.2f} ms ({r['steps']} steps, context "
                                                    f"{r['context']:.0f})" if r["steps"] else "no steps")
                                 for b, r in res.items()), flush=True)
    (out / "decode_steps.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | " + " | ".join(f"decode step at batch {b} (ms)" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for r in rows:
        if "error" in r:
            print(f"| {r['spec']} | failed: {r['error']} |")
            continue
        print(f"| {r['model']} | " + " | ".join(
            f"{r['batches'][b]['median_ms']:.2f}" if r["batches"][b]["steps"] else "-" for b in batches) + " |")
    print(f"\n{' '.join([sys.executable, *sys.argv])}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
