"""`revati validate`: the real H100 serving runs (shared/data/serving) replayed, real vs emulated.

For every run and stage of the real runs that is not overloaded, the matching spec of
examples/validation/ runs with `revati run` (revati.run.orchestrator, unchanged), and the
emulated requests are summarised as the real ones are: TTFT, TPOT and E2E, mean and p90,
each with its signed error (emulated - real) / real, the concurrency, and the command that
reproduces the row. The table, validate.json and validate.md go to --out.

How a real run becomes a spec (`mirror_spec`, one rule for every run; no per-run factor):
- model, tensor parallelism and the three server flags of exp-config.yaml
  (max-model-len, max-num-batched-tokens, max-num-seqs); everything else is vLLM's default,
  as in the real runs (prefix caching and chunked prefill on, CUDA graphs on).
- inference-perf's shared_prefix data as revati's `shared-prefix` dataset (a fixed pool of
  groups x users prompts, cycled; a recurring prompt is the same tokens, see
  revati.run.loadgen). The system prompt keeps its configured length; the question is the
  rest of the **measured** mean prompt length (`successes.prompt_len.mean`, rounded): the
  real prompts were text, decoded from random tokens and re-encoded by the server, and came
  out longer than configured (e.g. 575 for 100 + 447).
- the configured `output_len` (ignore_eos: every request generates exactly that many).
- constant arrivals (inference-perf's `constant` load) at the stage's rate, in virtual time.

Warm-up (the real stage ran 600-1200 s, the emulated one a slice): the measured stage is
replayed for WARMUP_S + MEASURE_S virtual seconds and only the requests that start after
WARMUP_S count. The warm-up covers the first pass over the prompt pool (44-50 prompts at 5-8
req/s: 5.6-8.8 s), so the empty prefix cache of the first requests is left out (it is under
1% of a real stage's requests); stage 1, which in reality followed stage 0, is preceded by
PREV_STAGE_S of stage 0's rate, and its own WARMUP_S covers the ramp of concurrency to the
new rate (a request lasts at most 5.2 s in these runs). `--quick` is the Llama-2-7B general
stage 0 cut to QUICK_S virtual seconds, with the same warm-up.

TPOT (the README's pitfall: inference-perf's own field is half the per-token time) is derived
the way `vllm bench serve` defines it, for the real and the emulated side alike:
    TPOT mean = (E2E mean - TTFT mean) / (output_len - 1)
    TPOT p90 ~ (E2E p90 - TTFT mean) / (output_len - 1)
The p90 is an approximation on both sides (the summaries have no per-request TPOT): it holds
to ~TTFT's spread / E2E, under 2% in these runs, where TTFT is 1-3% of E2E.

A stage is overloaded when it achieved under 90% of its requested rate (the reasoning runs:
0.5-1 of 4 req/s, minutes of TTFT, client timeouts): for it only the real achieved request
throughput is reported. Emulating the collapse needs the client's 300 s timeout and the
stage's full 1200 s.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import fnmatch
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from revati.run.loadgen import TRACE_NAME

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "serving"
SPEC_DIR = REPO / "examples" / "validation"

WARMUP_S = 10.0       # the measured stage's first virtual seconds, replayed but not measured
MEASURE_S = 30.0      # then the measured slice
PREV_STAGE_S = 10.0   # stage N > 0: this much of stage N-1's rate first (a warm prefix cache)
QUICK_S = 30.0        # --quick: the whole emulated stage (WARMUP_S of it unmeasured)
QUICK_SPEC = "llama-2-7b-general-stage0"
OVERLOAD = 0.9        # achieved / requested request rate under this: overloaded
GPU = "h100-sxm"      # the real runs' H100 SXM (the data folder is h100-vllm)
REAL_ENGINE = "vLLM 0.15 series"

LABEL_RUN = "revati.dev/validate-run"
LABEL_STAGE = "revati.dev/validate-stage"
LABEL_FROM = "revati.dev/validate-measure-from-s"

METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "E2E"))
STATS = ("mean", "p90")
# Shown beside the targets (not targets): TTFT's median and p99. A real stage's TTFT mean can sit
# above its p90 (Mixtral-8x7B TP=2 general stage 0: mean 63.9, median 55.8, p90 63.8, p99 383 ms):
# a tail of a few hundred requests in 10-20 minutes that a 30-second window may not hold.
TTFT_EXTRA = ("p50", "p99")


class ValidateError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- the real runs


@dataclass
class RealStage:
    """One stage of one real run: its configuration and its measured summary."""

    run: str                 # the run folder's name
    stage: int
    path: Path               # the run folder
    exp: dict                # exp-config.yaml
    profile: dict            # profile.yaml (inference-perf)
    metrics: dict            # stage_N_lifecycle_metrics.json

    @property
    def shared_prefix(self) -> dict:
        return self.profile["data"]["shared_prefix"]

    @property
    def stages(self) -> list[dict]:
        return self.profile["load"]["stages"]

    @property
    def rate(self) -> float:
        return float(self.stages[self.stage]["rate"])

    @property
    def output_len(self) -> int:
        return int(self.shared_prefix["output_len"])

    @property
    def achieved_rps(self) -> float:
        return float(self.metrics["successes"]["throughput"]["requests_per_sec"])

    @property
    def overloaded(self) -> bool:
        return self.achieved_rps < OVERLOAD * self.rate

    @property
    def workload(self) -> str:
        return self.run.rsplit("-", 1)[-1]

    @property
    def model_slug(self) -> str:
        m = re.fullmatch(r"\d{8}-\d{6}-(.+)-tp\d+-[a-z]+", self.run)
        if not m:
            raise ValidateError(f"{self.path}: the run folder is not named <date>-<time>-<model>-tp<N>-<workload>")
        return m.group(1)

    @property
    def name(self) -> str:
        """The spec's name (metadata.name, file examples/validation/<name>.yaml)."""
        return f"{self.model_slug}-{self.workload}-stage{self.stage}"


def _read_yaml_or_json(p: Path) -> dict:
    text = p.read_text()
    return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)


def real_stages(data_dir: Path = DEFAULT_DATA) -> list[RealStage]:
    """Every stage of every run under data_dir (h100-vllm/<run>/), in order."""
    out = []
    runs = sorted(p.parent for p in Path(data_dir).glob("*/*/exp-config.yaml"))
    if not runs:
        raise ValidateError(f"no real runs under {data_dir} (expected */<run>/exp-config.yaml)")
    for run in runs:
        exp = _read_yaml_or_json(run / "exp-config.yaml")
        profile = _read_yaml_or_json(run / "profile.yaml")
        for f in sorted(run.glob("stage_*_lifecycle_metrics.json"), key=lambda p: int(p.name.split("_")[1])):
            out.append(RealStage(run.name, int(f.name.split("_")[1]), run, exp, profile, json.loads(f.read_text())))
    return out


def real_metrics(st: RealStage) -> dict:
    """TTFT, TPOT (derived, module docstring) and E2E mean/p90 in ms; throughput; Little's in-flight."""
    lat = st.metrics["successes"]["latency"]
    ttft, e2e = lat["time_to_first_token"], lat["request_latency"]
    n1 = st.output_len - 1
    m = {"ttft_mean": ttft["mean"] * 1e3, "ttft_p90": ttft["p90"] * 1e3,
         "ttft_p50": ttft["median"] * 1e3, "ttft_p99": ttft["p99"] * 1e3,
         "e2el_mean": e2e["mean"] * 1e3, "e2el_p90": e2e["p90"] * 1e3,
         "tpot_mean": (e2e["mean"] - ttft["mean"]) / n1 * 1e3,
         "tpot_p90": (e2e["p90"] - ttft["mean"]) / n1 * 1e3}
    return {"metrics": m, "requests": st.metrics["successes"]["count"],
            "failures": (st.metrics.get("failures") or {}).get("count", 0),
            "requested_rps": st.rate, "achieved_rps": st.achieved_rps,
            "in_flight_mean": st.achieved_rps * e2e["mean"],
            "prompt_len_mean": st.metrics["successes"]["prompt_len"]["mean"]}


# ---------------------------------------------------------------------------- the specs


def mirror_spec(st: RealStage) -> dict:
    """The spec that replays one real stage (the rule of the module docstring)."""
    sp = st.shared_prefix
    load = st.profile["load"]
    if st.profile["data"].get("type") != "shared_prefix":
        raise ValidateError(f"{st.path}: only inference-perf's shared_prefix data is mirrored")
    if load.get("type") not in ("constant", "poisson"):
        raise ValidateError(f"{st.path}: load type {load.get('type')!r} is not mirrored (constant or poisson)")
    prompt_len = round(st.metrics["successes"]["prompt_len"]["mean"])
    question = prompt_len - int(sp["system_prompt_len"])
    stages = []
    measure_from = WARMUP_S
    if st.stage > 0:
        stages.append({"rate": float(st.stages[st.stage - 1]["rate"]), "durationSeconds": PREV_STAGE_S})
        measure_from += PREV_STAGE_S
    stages.append({"rate": st.rate, "durationSeconds": WARMUP_S + MEASURE_S})
    exp = st.exp
    return {
        "apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment",
        "metadata": {"name": st.name, "labels": {LABEL_RUN: st.run, LABEL_STAGE: str(st.stage),
                                                 LABEL_FROM: f"{measure_from:g}"}},
        "spec": {
            "model": exp["model"], "gpu": GPU, "tensorParallelSize": int(exp.get("tensor_parallelism", 1)),
            "engine": {"args": {"max-model-len": int(exp["max_model_len"]),
                                "max-num-batched-tokens": int(exp["max_num_batched_tokens"]),
                                "max-num-seqs": int(exp["max_num_seqs"])}},
            "workload": {
                "dataset": {"type": "shared-prefix", "numGroups": int(sp["num_unique_system_prompts"]),
                            "promptsPerGroup": int(sp["num_users_per_system_prompt"]),
                            "systemPromptLen": int(sp["system_prompt_len"]), "questionLen": question,
                            "outputLen": st.output_len},
                "arrival": {"process": load["type"], "stages": stages},
                "ignoreEos": bool(st.profile.get("server", {}).get("ignore_eos", True)),
                "seed": 0,
            },
        },
    }


def spec_header(st: RealStage) -> str:
    sp = st.shared_prefix
    return (f"# Replays stage {st.stage} of the real run {st.run} ({REAL_ENGINE}, H100 SXM;\n"
            f"# ../shared/data/serving/h100-vllm/{st.run}/): {st.rate:g} req/s constant,\n"
            f"# {sp['num_unique_system_prompts']} system prompts x {sp['num_users_per_system_prompt']} users, "
            f"system prompt {sp['system_prompt_len']} + question {sp['question_len']} tokens configured,\n"
            f"# {st.metrics['successes']['prompt_len']['mean']:g} measured (the question takes the difference), "
            f"output {sp['output_len']}.\n"
            f"# Measured: the requests that start after {mirror_spec(st)['metadata']['labels'][LABEL_FROM]} virtual "
            f"seconds (the warm-up: revati/run/validate.py).\n"
            f"# Generated by `python -m revati.run.validate --write-specs`; do not edit by hand.\n")


def write_specs(stages: list[RealStage], spec_dir: Path = SPEC_DIR) -> list[Path]:
    spec_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for st in stages:
        if st.overloaded:
            continue
        p = spec_dir / f"{st.name}.yaml"
        p.write_text(spec_header(st) + yaml.safe_dump(mirror_spec(st), sort_keys=False))
        out.append(p)
    return out


def load_specs(spec_dir: Path = SPEC_DIR) -> dict[tuple[str, int], tuple[Path, dict]]:
    """(run, stage) → (path, spec dict) of every shipped validation spec."""
    out = {}
    for p in sorted(spec_dir.glob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        labels = (d.get("metadata") or {}).get("labels") or {}
        if LABEL_RUN in labels:
            out[(labels[LABEL_RUN], int(labels.get(LABEL_STAGE, 0)))] = (p, d)
    return out


def quick_spec(spec: dict) -> dict:
    """The --quick cut of a stage-0 spec: its stage shortened to QUICK_S virtual seconds."""
    d = copy.deepcopy(spec)
    stages = d["spec"]["workload"]["arrival"]["stages"]
    if len(stages) != 1:
        raise ValidateError("--quick cuts a stage-0 spec (one stage)")
    stages[0]["durationSeconds"] = QUICK_S
    d["metadata"]["name"] = d["metadata"]["name"] + "-quick"
    return d


# ---------------------------------------------------------------------------- emulated side


def read_requests(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _end(r: dict) -> float:
    return r["start_s"] + r["e2el_ms"] / 1e3


def in_flight_peak(rows: list[dict], t_from: float, t_to: float) -> int:
    """The most requests in flight at any instant of [t_from, t_to] (every request counts)."""
    events = []
    for r in rows:
        if r.get("success") and r.get("start_s") is not None and r.get("e2el_ms") is not None:
            events += [(r["start_s"], 1), (_end(r), -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    n = peak = 0
    entered = False
    for t, d in events:
        if t > t_to:
            break
        if t >= t_from and not entered:
            peak, entered = n, True
        n += d
        if t >= t_from:
            peak = max(peak, n)
    return peak


def in_flight_mean(rows: list[dict], t_from: float, t_to: float) -> float:
    """The time-average of the requests in flight over [t_from, t_to] (every request counts).

    In a steady state this is Little's law (arrival rate x mean E2E), which is all the real
    summaries allow; measured directly it stays right when the emulated server falls behind."""
    busy = 0.0
    for r in rows:
        if r.get("success") and r.get("start_s") is not None and r.get("e2el_ms") is not None:
            busy += max(0.0, min(_end(r), t_to) - max(r["start_s"], t_from))
    return busy / (t_to - t_from)


def emulated_metrics(rows: list[dict], measure_from_s: float, window_end_s: float, output_len: int,
                     arrivals: list[float] | None = None) -> dict:
    """The requests that arrive in [measure_from_s, window_end_s), summarised as the real ones.

    arrivals: the planned arrival time of each row (the timed trace's timestamps, in bench's
    request order). The window is chosen by them, not by the measured start_s: a start is
    measured from the first request's start, which itself can be late by milliseconds, so a
    request planned at exactly measure_from_s could fall on either side."""
    eps = 1e-6
    if arrivals is not None and len(arrivals) != len(rows):
        raise ValidateError(f"{len(arrivals)} planned arrivals for {len(rows)} requests")
    at = arrivals if arrivals is not None else [r.get("start_s") for r in rows]
    measured = [r for r, t in zip(rows, at) if t is not None and measure_from_s - eps <= t < window_end_s]
    ok = [r for r in measured if r.get("success")]
    if not ok:
        raise ValidateError(f"no successful request started after {measure_from_s:g} s")
    ttft = np.array([r["ttft_ms"] for r in ok])
    e2e = np.array([r["e2el_ms"] for r in ok])
    n1 = output_len - 1
    m = {"ttft_mean": float(ttft.mean()), "ttft_p90": float(np.percentile(ttft, 90)),
         "ttft_p50": float(np.percentile(ttft, 50)), "ttft_p99": float(np.percentile(ttft, 99)),
         "e2el_mean": float(e2e.mean()), "e2el_p90": float(np.percentile(e2e, 90)),
         "tpot_mean": float((e2e.mean() - ttft.mean()) / n1),
         "tpot_p90": float((np.percentile(e2e, 90) - ttft.mean()) / n1)}
    window = window_end_s - measure_from_s
    last_end = max(_end(r) for r in ok)
    out_lens = sorted({r.get("output_tokens") for r in ok})
    return {"metrics": m, "requests": len(ok), "failures": len(measured) - len(ok),
            "warmup_requests": sum(1 for t in at if t is not None and t < measure_from_s - eps),
            "achieved_rps": len(ok) / window,
            "in_flight_mean": in_flight_mean(rows, measure_from_s, window_end_s),
            "in_flight_peak": in_flight_peak(rows, measure_from_s, last_end),
            "output_tokens": out_lens}


def signed_error(real: float | None, emulated: float | None) -> float | None:
    return (emulated - real) / real * 100 if real and emulated is not None else None


def compare(real: dict, emu: dict) -> dict:
    keys = [f"{m}_{s}" for m, _ in METRICS for s in STATS] + [f"ttft_{s}" for s in TTFT_EXTRA]
    return {k: {"real": real["metrics"].get(k), "emulated": emu["metrics"].get(k),
                "error_pct": signed_error(real["metrics"].get(k), emu["metrics"].get(k))}
            for k in keys}


# ---------------------------------------------------------------------------- output


def _f(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def _err(v) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def render(result: dict):
    """The rich table: one block of rows per validated stage, then the overloaded stages.

    The commands go below the table (`commands`), so that no figure is cut to fit."""
    from rich.table import Table

    t = Table(title=f"revati validate — real ({REAL_ENGINE}, H100 SXM) vs emulated "
                    f"(vLLM {result.get('versions', {}).get('vllm', '?')}, virtual {GPU})",
              caption=f"{result['date']}, commit {result['commit']}; reproduce: {result['command']}")
    t.add_column("run / stage", overflow="fold", min_width=16)
    t.add_column("metric", no_wrap=True)
    for col in ("real", "emulated", "error"):
        t.add_column(col, justify="right", no_wrap=True, min_width=9 if col == "error" else None)
    for row in result["rows"]:
        head = f"{row['name']} ({row['real']['requested_rps']:g} req/s)"
        if row.get("error"):
            t.add_row(head, "[red]failed[/red]", "", "", "", end_section=True)
            continue
        first = True
        for m, label in METRICS:
            for s in STATS:
                c = row["compare"][f"{m}_{s}"]
                spec = ".2f" if m == "tpot" else ".1f"
                t.add_row(head if first else "", f"{label} {s} (ms)", _f(c["real"], spec), _f(c["emulated"], spec),
                          _err(c["error_pct"]))
                first = False
        for s in TTFT_EXTRA:
            c = row["compare"].get(f"ttft_{s}")
            if c and c["real"] is not None:
                t.add_row("", f"  TTFT {s} (ms, shown)", _f(c["real"]), _f(c["emulated"]), _err(c["error_pct"]))
        r, e = row["real"], row["emulated"]
        t.add_row("", "in flight mean (real: Little)", _f(r["in_flight_mean"]), _f(e["in_flight_mean"]),
                  _err(signed_error(r["in_flight_mean"], e["in_flight_mean"])))
        t.add_row("", "in flight peak", "-", str(e["in_flight_peak"]), "")
        t.add_row("", "requests measured", str(r["requests"]), f"{e['requests']} (+{e['warmup_requests']} warm-up)",
                  "", end_section=True)
    for o in result["overloaded"]:
        t.add_row(f"{o['name']} ({o['requested_rps']:g} req/s)", "achieved req/s (overloaded)",
                  f"{o['achieved_rps']:.2f}", "not emulated", "", end_section=True)
    return t


def commands(result: dict) -> list[str]:
    """Per row: the command that reproduces it, and why it failed if it did."""
    out = []
    for row in result["rows"]:
        out.append(f"{row['name']}: {row['command']}")
        if row.get("error"):
            out.append(f"  failed: {row['error']}")
    return out


def markdown(result: dict) -> str:
    """The table of docs/fidelity.md."""
    lines = [f"Measured {result['date']} at commit `{result['commit']}` with `{result['command']}` "
             f"(emulated vLLM {result.get('versions', {}).get('vllm', '?')}; real {REAL_ENGINE}).", "",
             "| run (stage) | req/s | n real / emu | TTFT mean ms real / emu (err) | TTFT p90 | TPOT mean | TPOT p90 "
             "| E2E mean | E2E p90 | in flight mean real (Little) / emu, emu peak | TTFT p50 · p99 (shown) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if row.get("error"):
            lines.append(f"| {row['name']} | {row['real']['requested_rps']:g} | failed: {row['error'][:80]} "
                         "| | | | | | | | |")
            continue
        cells = []
        for m, _ in METRICS:
            for s in STATS:
                c = row["compare"][f"{m}_{s}"]
                spec = ".2f" if m == "tpot" else ".1f"
                cells.append(f"{_f(c['real'], spec)} / {_f(c['emulated'], spec)} ({_err(c['error_pct'])})")
        r, e = row["real"], row["emulated"]
        extra = " · ".join(
            f"{_f(c['real'])} / {_f(c['emulated'])} ({_err(c['error_pct'])})"
            for c in (row["compare"].get(f"ttft_{s}") for s in TTFT_EXTRA) if c and c["real"] is not None)
        lines.append(f"| {row['name']} | {r['requested_rps']:g} | {r['requests']} / {e['requests']} | "
                     + " | ".join(cells)
                     + f" | {r['in_flight_mean']:.1f} / {e['in_flight_mean']:.1f}, {e['in_flight_peak']} | {extra} |")
    for o in result["overloaded"]:
        lines.append(f"| {o['name']} | {o['requested_rps']:g} | overloaded: achieved {o['achieved_rps']:.2f} req/s "
                     f"real ({o['failures']} failures); not emulated | | | | | | | | |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in result["rows"])]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------- the command


def _short(p: Path) -> Path:
    """p relative to the working directory when it is below it (the commands shown)."""
    p = Path(p).resolve()
    return p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p


@dataclass
class Job:
    real: RealStage
    spec_path: Path
    spec: dict
    measure_from_s: float
    window_end_s: float
    command: str
    notes: list[str] = field(default_factory=list)


def with_engine_version(spec: dict, version: str | None) -> dict:
    """The spec with `engine.version` set (None: as it is, the default engine)."""
    if version is None:
        return spec
    spec = copy.deepcopy(spec)
    spec["spec"].setdefault("engine", {})["version"] = version
    # NOTE: its own report folder, so a row of another version is never overwritten
    spec["metadata"]["name"] = f"{spec['metadata']['name']}-vllm-{version.replace('.', '-')}"
    return spec


def plan_jobs(stages: list[RealStage], specs: dict, *, quick: bool, runs_glob: str, out: Path,
              engine_version: str | None = None) -> list[Job]:
    jobs = []
    for st in stages:
        if st.overloaded:
            continue
        if quick and st.name != QUICK_SPEC:
            continue
        if not quick and not (fnmatch.fnmatch(st.name, runs_glob) or fnmatch.fnmatch(st.run, runs_glob)):
            continue
        if (st.run, st.stage) not in specs:
            raise ValidateError(f"no spec for {st.run} stage {st.stage} in {SPEC_DIR} "
                                "(python -m revati.run.validate --write-specs)")
        path, spec = specs[(st.run, st.stage)]
        notes = []
        if spec != mirror_spec(st):
            notes.append(f"{path.name} differs from what the real run gives (python -m revati.run.validate "
                         "--write-specs)")
        if quick:
            spec = quick_spec(spec)
        spec = with_engine_version(spec, engine_version)
        measure_from = float(spec["metadata"]["labels"][LABEL_FROM])
        end = sum(s["durationSeconds"] for s in spec["spec"]["workload"]["arrival"]["stages"])
        ver = f" --engine-version {engine_version}" if engine_version else ""
        cmd = (f"revati validate --quick{ver}" if quick or engine_version else
               f"revati run {_short(path)} --out {_short(out / spec['metadata']['name'])}")
        if engine_version and not quick:
            cmd = f"revati validate --runs '{st.name}'{ver}"
        jobs.append(Job(st, path, spec, measure_from, end, cmd, notes))
    return jobs


def run_job(job: Job, out: Path, console) -> dict:
    from revati.run import orchestrator
    from revati.spec import spec_from_dict

    spec = spec_from_dict(job.spec, str(job.spec_path))
    run_dir = out / job.spec["metadata"]["name"]
    if job.spec["metadata"]["name"].endswith("-quick"):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "quick.spec.yaml").write_text(yaml.safe_dump(job.spec, sort_keys=False))
    row = {"name": job.spec["metadata"]["name"], "run": job.real.run, "stage": job.real.stage,
           "spec": str(job.spec_path), "command": job.command, "report_dir": str(run_dir),
           "measure_from_s": job.measure_from_s, "window_end_s": job.window_end_s,
           "real": real_metrics(job.real), "notes": list(job.notes)}
    t0 = time.monotonic()
    try:
        result = orchestrator.run(spec, run_dir, spec_path=job.spec_path, console=console)
        rows = read_requests(run_dir / "requests.jsonl")
        # bench keeps the trace's order in its per-request lists (requests.jsonl's ids)
        arrivals = [json.loads(x)["timestamp"] for x in (run_dir / TRACE_NAME).read_text().splitlines() if x.strip()]
        emu = emulated_metrics(rows, job.measure_from_s, job.window_end_s, job.real.output_len, arrivals)
        if emu["output_tokens"] != [job.real.output_len]:
            row["notes"].append(f"emulated output lengths {emu['output_tokens']} != {job.real.output_len}")
        e = result.report.get("emulation", {})
        row.update(emulated=emu, compare=compare(row["real"], emu),
                   virtual_s=e.get("virtual_s"), wall_s=e.get("wall_s"), speedup=e.get("speedup"),
                   versions=e.get("versions"))
    except Exception as exc:  # noqa: BLE001 - one failed run is a row of the table, the rest go on
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    row["total_wall_s"] = time.monotonic() - t0
    return row


def validate_main(args: argparse.Namespace) -> int:
    import signal

    from rich.console import Console

    console = Console(stderr=True)
    data = Path(args.data) if args.data else DEFAULT_DATA
    out = Path(args.out).resolve()
    try:
        stages = real_stages(data)
        specs = load_specs()
        jobs = plan_jobs(stages, specs, quick=args.quick, runs_glob=args.runs, out=out,
                         engine_version=getattr(args, "engine_version", None))
        if getattr(args, "engine_version", None) and jobs:
            # a version the emulator does not support fails here, before any run, with the list
            from revati.spec import SpecError, spec_from_dict
            try:
                spec_from_dict(jobs[0].spec, f"--engine-version {args.engine_version}")
            except SpecError as e:
                raise ValidateError(str(e)) from None
    except ValidateError as e:
        print(f"revati validate: {e}", file=sys.stderr)
        return 2
    overloaded = [st for st in stages if st.overloaded and not args.quick and
                  (fnmatch.fnmatch(st.name, args.runs) or fnmatch.fnmatch(st.run, args.runs))]
    if args.list:
        for j in jobs:
            print(f"{j.real.run} stage {j.real.stage}: {j.spec_path.relative_to(REPO)} "
                  f"(measured from {j.measure_from_s:g} s to {j.window_end_s:g} s)")
        for st in overloaded:
            print(f"{st.run} stage {st.stage}: overloaded ({st.achieved_rps:.2f} of {st.rate:g} req/s), not emulated")
        return 0
    if not jobs:
        print(f"revati validate: no run matches {args.runs!r}", file=sys.stderr)
        return 2

    def interrupt(signum, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see cli.cmd_run
    out.mkdir(parents=True, exist_ok=True)
    command = "revati validate --quick" if args.quick else \
        "revati validate" + (f" --runs '{args.runs}'" if args.runs != "*" else "")
    if getattr(args, "engine_version", None):
        command += f" --engine-version {args.engine_version}"
    result = {"date": _dt.date.today().isoformat(), "commit": _commit(), "command": command,
              "real_engine": REAL_ENGINE, "warmup": {"warmup_s": WARMUP_S, "measure_s": MEASURE_S,
                                                     "prev_stage_s": PREV_STAGE_S, "quick_s": QUICK_S},
              "rows": [], "overloaded": []}
    try:
        for i, job in enumerate(jobs, 1):
            console.rule(f"[bold]revati validate [{i}/{len(jobs)}]: {job.spec['metadata']['name']}[/bold] — "
                         f"{job.real.run} stage {job.real.stage}, {job.real.rate:g} req/s")
            for n in job.notes:
                console.print(f"[yellow]note:[/yellow] {n}")
            row = run_job(job, out, console)
            result["rows"].append(row)
            if row.get("versions") and "versions" not in result:
                result["versions"] = row["versions"]
            if row.get("error"):
                console.print(f"[red]{row['name']} failed:[/red] {row['error']}")
            else:
                c = row["compare"]
                console.print(f"{row['name']}: TTFT {c['ttft_mean']['emulated']:.1f} ms "
                              f"({_err(c['ttft_mean']['error_pct'])}), TPOT {c['tpot_mean']['emulated']:.2f} ms "
                              f"({_err(c['tpot_mean']['error_pct'])}), E2E {c['e2el_mean']['emulated']:.0f} ms "
                              f"({_err(c['e2el_mean']['error_pct'])}); {row['total_wall_s']:.0f} s wall")
            (out / "validate.json").write_text(json.dumps(result, indent=1, default=str))
    except KeyboardInterrupt:
        print("revati validate: interrupted; every process was stopped", file=sys.stderr)
        return 130
    for st in overloaded:
        rm = real_metrics(st)
        result["overloaded"].append({"name": st.name, "run": st.run, "stage": st.stage,
                                     "requested_rps": st.rate, "achieved_rps": st.achieved_rps,
                                     "failures": rm["failures"],
                                     "note": "overloaded (achieved < 90% of the requested rate): not emulated"})
    (out / "validate.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "validate.md").write_text(markdown(result))
    term = Console(width=max(Console().width, 120))
    term.print(render(result))
    for line in commands(result):
        term.print(line, highlight=False, markup=False, soft_wrap=True)
    print(f"revati validate: wrote {out / 'validate.json'} and {out / 'validate.md'}")
    return 1 if any(r.get("error") for r in result["rows"]) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m revati.run.validate",
                                description="Write examples/validation/*.yaml from the real runs.")
    p.add_argument("--write-specs", action="store_true", help="(re)write the specs from the real runs")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    a = p.parse_args(argv)
    if not a.write_specs:
        p.print_help()
        return 2
    for path in write_specs(real_stages(Path(a.data))):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
