"""The load generator of `revati run`: the real `vllm bench serve`, with arguments mapped from the spec.

Mapping (vLLM 0.32's `vllm bench serve`):

| spec | bench |
|---|---|
| dataset `random` (no stages) | `--dataset-name random --random-input-len --random-output-len --random-range-ratio` |
| dataset `shared-prefix`, `sharegpt-like`, `trace`, or any dataset with `stages` | `--dataset-name timed_trace` over a JSONL that revati writes (below) |
| arrival `poisson` at `requestRate` | `--request-rate R --burstiness 1` (exponential gaps) |
| arrival `constant` at `requestRate` | `--request-rate R --burstiness inf` (gaps of exactly 1/R) |
| no `requestRate` | `--request-rate inf` (everything at t=0, usually with `--max-concurrency`) |
| `stages` | arrival timestamps generated per stage (Poisson or constant), replayed self-timed |
| `maxConcurrency` | `--max-concurrency` |
| `numPrompts` / `durationSeconds` | `--num-prompts` (a duration becomes ceil(rate x duration) prompts) |
| `ignoreEos`, `seed` | `--ignore-eos`, `--seed` (timed_trace always ignores EOS) |
| `slo` | `--goodput ttft:X tpot:Y e2el:Z` (per-request thresholds: the highest percentile given) |

Why `timed_trace` for everything but plain random: its prompts are token-id lists of an
exact length (no decode/re-encode drift), an entry's `hash_ids` name chunks of tokens so a
shared system prompt is literally the same tokens across a group (prefix caching sees real
hits), and its per-request timestamps replay staged rates in one bench run, so a staged
workload gets one result with every request in it (rather than consecutive bench phases, or
bench's linear/exponential ramp-up, which cannot express piecewise-constant stages).

The `sharegpt-like` dataset is a synthetic length distribution shipped here, not ShareGPT
itself: input and output lengths are independent log-normals (SHAREGPT_LIKE below), clipped
to [4, maxInputLen] and [4, maxOutputLen]. Its medians and spreads are chosen to look like
the published summaries of the ShareGPT conversations vLLM benchmarks use (short prompts with
a long tail; outputs a little longer than inputs); it is not fit to that data.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from revati.spec.schema import (
    DeploymentSpec,
    RandomDataset,
    ShareGptLikeDataset,
    SharedPrefixDataset,
    TraceDataset,
)

#: The shipped sharegpt-like distribution: log-normal (median tokens, sigma of the log).
SHAREGPT_LIKE = {
    "input": {"median": 128, "sigma": 1.1, "min": 4},
    "output": {"median": 160, "sigma": 0.9, "min": 4},
}

PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
METRIC_PERCENTILES = "50,90,99"
TRACE_NAME = "dataset.timed_trace.jsonl"


class WorkloadError(ValueError):
    """A workload that validates but cannot be turned into a bench run; names the field."""


@dataclass
class LoadPlan:
    """What `vllm bench serve` will be asked to do."""

    args: list[str]                       # every flag after `vllm bench serve`
    num_prompts: int
    dataset: str                          # bench's --dataset-name
    trace_rows: list[dict] | None = None  # the timed_trace JSONL to write, if any
    notes: list[str] = field(default_factory=list)

    def write_dataset(self, path: Path) -> None:
        if self.trace_rows is not None:
            with open(path, "w") as f:
                for row in self.trace_rows:
                    f.write(json.dumps(row, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------------------- arrivals


def stage_arrivals(stages, process: str, rng: random.Random) -> list[float]:
    """Arrival times (s) for piecewise-constant rates: Poisson or evenly spaced in each stage."""
    out: list[float] = []
    t0 = 0.0
    for st in stages:
        end = t0 + st.durationSeconds
        if process == "constant":
            n = int(round(st.rate * st.durationSeconds))
            out += [t0 + i / st.rate for i in range(n)]
        else:
            t = t0 + rng.expovariate(st.rate)
            while t < end:
                out.append(t)
                t += rng.expovariate(st.rate)
        t0 = end
    return out


def num_prompts(spec: DeploymentSpec) -> int:
    w = spec.workload
    if w.arrival.stages:
        return -1  # decided by the generated arrivals
    if w.numPrompts is not None:
        return w.numPrompts
    if w.arrival.requestRate is None:
        raise WorkloadError("spec.workload.durationSeconds: a duration needs spec.workload.arrival.requestRate "
                            "(or stages); without a rate every request is sent at once — give numPrompts instead")
    return max(1, math.ceil(w.arrival.requestRate * w.durationSeconds))


# ---------------------------------------------------------------------------- lengths


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma)))))


def _random_len(rng: random.Random, n: int, r: float) -> int:
    """As vLLM's random dataset: uniform integers in [floor(n(1-r)), ceil(n(1+r))]."""
    lo, hi = max(1, math.floor(n * (1 - r))), max(1, math.ceil(n * (1 + r)))
    return rng.randint(lo, hi)


def _rows(spec: DeploymentSpec, n: int, rng: random.Random, base_dir: Path) -> list[dict]:
    """(input_length, output_length, hash_ids[, timestamp]) of each request of a timed trace."""
    ds = spec.workload.dataset
    rows: list[dict] = []
    if isinstance(ds, RandomDataset):
        for i in range(n):
            rows.append({"input_length": _random_len(rng, ds.inputLen, ds.rangeRatio),
                         "output_length": _random_len(rng, ds.outputLen, ds.rangeRatio)})
    elif isinstance(ds, ShareGptLikeDataset):
        for i in range(n):
            rows.append({"input_length": _lognormal(rng, SHAREGPT_LIKE["input"]["median"], SHAREGPT_LIKE["input"]["sigma"],
                                                    SHAREGPT_LIKE["input"]["min"], ds.maxInputLen),
                         "output_length": _lognormal(rng, SHAREGPT_LIKE["output"]["median"],
                                                     SHAREGPT_LIKE["output"]["sigma"], SHAREGPT_LIKE["output"]["min"],
                                                     ds.maxOutputLen)})
    elif isinstance(ds, SharedPrefixDataset):
        # A pool of numGroups x promptsPerGroup (group, question) slots in a seeded order;
        # request i takes slot i mod pool. Questions are always fresh tokens.
        pool = [g for g in range(ds.numGroups) for _ in range(ds.promptsPerGroup)]
        rng.shuffle(pool)
        for i in range(n):
            rows.append({"input_length": ds.systemPromptLen + ds.questionLen, "output_length": ds.outputLen,
                         "group": pool[i % len(pool)]})
    elif isinstance(ds, TraceDataset):
        rows = read_trace(ds, base_dir)
    return _with_hash_ids(spec, rows)


def _with_hash_ids(spec: DeploymentSpec, rows: list[dict]) -> list[dict]:
    ds = spec.workload.dataset
    # hash ids: chunks of tokens (see timed_trace_chunk). A shared-prefix group's system
    # prompt is one chunk named by the group; everything else is unique to its request.
    chunk = timed_trace_chunk(spec)
    for i, row in enumerate(rows):
        uniq = (i + 1) * 1_000_000
        if "group" in row:
            q_chunks = math.ceil(ds.questionLen / chunk)
            row["hash_ids"] = [row.pop("group")] + [uniq + j for j in range(q_chunks)]
        else:
            row["hash_ids"] = [uniq + j for j in range(math.ceil(row["input_length"] / chunk))]
    return rows


def timed_trace_chunk(spec: DeploymentSpec) -> int:
    ds = spec.workload.dataset
    return ds.systemPromptLen if isinstance(ds, SharedPrefixDataset) else 16


def read_trace(ds: TraceDataset, base_dir: Path) -> list[dict]:
    """The spec's trace JSONL: one request per line with arrival_s, input_tokens, output_tokens."""
    p = Path(ds.path).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    if not p.exists():
        raise WorkloadError(f"spec.workload.dataset.path: trace file {p} does not exist")
    rows = []
    for k, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            rows.append({"timestamp": float(d["arrival_s"]), "input_length": int(d["input_tokens"]),
                         "output_length": int(d["output_tokens"])})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise WorkloadError(f"spec.workload.dataset.path: {p}:{k}: each line must be a JSON object with "
                                f"arrival_s, input_tokens and output_tokens ({e!r})") from None
        if rows[-1]["input_length"] <= 0 or rows[-1]["output_length"] <= 0:
            raise WorkloadError(f"spec.workload.dataset.path: {p}:{k}: token counts must be > 0")
    if not rows:
        raise WorkloadError(f"spec.workload.dataset.path: {p} has no requests")
    rows.sort(key=lambda r: r["timestamp"])
    t0 = rows[0]["timestamp"]
    for r in rows:
        r["timestamp"] -= t0
    return rows


# ---------------------------------------------------------------------------- goodput


def goodput_args(spec: DeploymentSpec) -> list[str]:
    """`--goodput ttft:X tpot:Y e2el:Z`: each metric's tightest-percentile target as a per-request limit."""
    if spec.slo is None:
        return []
    pairs = []
    for key, targets in (("ttft", spec.slo.ttftMs), ("tpot", spec.slo.tpotMs), ("e2el", spec.slo.e2elMs)):
        if targets is None:
            continue
        value = targets.p99 or targets.p90 or targets.p50
        if value:
            pairs.append(f"{key}:{value:g}")
    return ["--goodput", *pairs] if pairs else []


# ---------------------------------------------------------------------------- plan


def plan(spec: DeploymentSpec, *, base_url: str, model: str, tokenizer: str, result_dir: Path,
         dataset_path: Path | None = None, spec_dir: Path = Path(".")) -> LoadPlan:
    """The `vllm bench serve` arguments for a spec (pure: nothing is written or started)."""
    w = spec.workload
    ds = w.dataset
    arr = w.arrival
    rng = random.Random(w.seed)
    notes: list[str] = []
    dataset_path = dataset_path or (result_dir / TRACE_NAME)

    args = ["--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", model, "--tokenizer", tokenizer, "--seed", str(w.seed),
            "--percentile-metrics", PERCENTILE_METRICS, "--metric-percentiles", METRIC_PERCENTILES,
            "--save-result", "--save-detailed", "--result-dir", str(result_dir),
            "--result-filename", "bench.json"]
    trace_rows = None
    self_timed = False
    if isinstance(ds, RandomDataset) and not arr.stages:
        n = num_prompts(spec)
        dataset = "random"
        args += ["--dataset-name", "random", "--random-input-len", str(ds.inputLen),
                 "--random-output-len", str(ds.outputLen), "--random-range-ratio", f"{ds.rangeRatio:g}"]
    else:
        dataset = "timed_trace"
        if arr.stages:
            times = stage_arrivals(arr.stages, arr.process, rng)
            if not times:
                raise WorkloadError("spec.workload.arrival.stages: the stages produce no request "
                                    "(rate x duration < 1 in every stage)")
            if w.numPrompts is not None and w.numPrompts < len(times):
                times = times[:w.numPrompts]
                notes.append(f"stages produce more arrivals than numPrompts; the first {w.numPrompts} are sent")
            n = len(times)
            trace_rows = _rows(spec, n, rng, spec_dir) if not isinstance(ds, TraceDataset) else \
                _rows(spec, 0, rng, spec_dir)
            if isinstance(ds, TraceDataset):  # the trace's lengths, cycled, at the stages' times
                src = trace_rows
                trace_rows = _with_hash_ids(spec, [{"input_length": src[i % len(src)]["input_length"],
                                                    "output_length": src[i % len(src)]["output_length"]}
                                                   for i in range(n)])
            for row, t in zip(trace_rows, times):
                row["timestamp"] = round(t, 6)
            self_timed = True
            notes.append(f"stages: {len(arr.stages)} piecewise-constant {arr.process} stage(s) → {n} arrival "
                         "timestamps generated by revati and replayed by vllm bench's timed_trace (self-timed)")
        elif isinstance(ds, TraceDataset):
            trace_rows = _rows(spec, 0, rng, spec_dir)
            if w.numPrompts is not None:
                trace_rows = trace_rows[:w.numPrompts]
            n = len(trace_rows)
            self_timed = arr.requestRate is None
            if self_timed:
                notes.append("trace: requests arrive at the trace's arrival_s times (self-timed)")
            else:
                notes.append("trace: arrival_s is ignored; arrivals follow arrival.requestRate")
        else:
            n = num_prompts(spec)
            trace_rows = _rows(spec, n, rng, spec_dir)
        args += ["--dataset-name", "timed_trace", "--dataset-path", str(dataset_path),
                 "--timed-trace-chunk-hash-size", str(timed_trace_chunk(spec))]
        args += ["--self-timed"] if self_timed else ["--no-self-timed"]
        if not w.ignoreEos:
            notes.append("ignoreEos=false is not honoured by vllm bench's timed_trace dataset (it always "
                         "ignores EOS); the stand-in tokenizer never samples EOS anyway")
    args += ["--num-prompts", str(n)]
    if not self_timed:
        if arr.requestRate is None:
            args += ["--request-rate", "inf"]
        else:
            args += ["--request-rate", f"{arr.requestRate:g}",
                     "--burstiness", "inf" if arr.process == "constant" else "1"]
    if arr.maxConcurrency is not None:
        args += ["--max-concurrency", str(arr.maxConcurrency)]
    if w.ignoreEos:
        args += ["--ignore-eos"]
    args += goodput_args(spec)
    return LoadPlan(args=args, num_prompts=n, dataset=dataset, trace_rows=trace_rows, notes=notes)
