"""The spec → `vllm bench serve` mapping, for every dataset kind and arrival shape."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from revati.run import loadgen
from revati.spec import spec_from_dict

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())


def _spec(workload: dict | None = None, slo=None, **workload_kw):
    d = copy.deepcopy(DEFAULT)
    if workload is not None:
        d["spec"]["workload"] = workload
    d["spec"]["workload"].update(workload_kw)
    if slo is not None:
        d["spec"]["slo"] = slo
    return spec_from_dict(d).spec


def _plan(spec, tmp_path=Path("/tmp/out")):
    return loadgen.plan(spec, base_url="http://127.0.0.1:8000", model="m", tokenizer="tok",
                        result_dir=tmp_path, spec_dir=tmp_path)


def _flag(args, name):
    i = args.index(name)
    return args[i + 1]


def test_random_poisson_maps_to_bench_random_dataset():
    p = _plan(_spec())
    a = p.args
    assert p.dataset == "random" and p.trace_rows is None and p.num_prompts == 200
    assert _flag(a, "--dataset-name") == "random"
    assert (_flag(a, "--random-input-len"), _flag(a, "--random-output-len"), _flag(a, "--random-range-ratio")) == \
        ("512", "128", "0.2")
    assert (_flag(a, "--request-rate"), _flag(a, "--burstiness")) == ("4", "1")
    assert _flag(a, "--num-prompts") == "200" and _flag(a, "--seed") == "0"
    assert "--ignore-eos" in a and "--save-detailed" in a and "--save-result" in a
    assert _flag(a, "--percentile-metrics") == "ttft,tpot,itl,e2el"
    assert _flag(a, "--metric-percentiles") == "50,90,99"
    assert a[a.index("--goodput") + 1:a.index("--goodput") + 3] == ["ttft:500", "tpot:50"]
    assert "--max-concurrency" not in a


def test_constant_arrival_concurrency_duration_and_no_slo():
    s = _spec(arrival={"process": "constant", "requestRate": 2.5, "maxConcurrency": 8}, numPrompts=None,
              durationSeconds=10, ignoreEos=False, seed=7)
    s.slo = None
    a = _plan(s).args
    assert (_flag(a, "--request-rate"), _flag(a, "--burstiness")) == ("2.5", "inf")
    assert _flag(a, "--max-concurrency") == "8"
    assert _flag(a, "--num-prompts") == "25"  # ceil(2.5 x 10)
    assert _flag(a, "--seed") == "7" and "--ignore-eos" not in a and "--goodput" not in a


def test_no_rate_sends_everything_at_once_and_duration_needs_a_rate():
    a = _plan(_spec(arrival={"maxConcurrency": 4}, numPrompts=16)).args
    assert _flag(a, "--request-rate") == "inf" and "--burstiness" not in a
    with pytest.raises(loadgen.WorkloadError, match="requestRate"):
        _plan(_spec(arrival={"maxConcurrency": 4}, numPrompts=None, durationSeconds=10))


def test_shared_prefix_is_a_timed_trace_whose_groups_share_the_system_prompt_chunk(tmp_path):
    ds = {"type": "shared-prefix", "numGroups": 3, "promptsPerGroup": 4, "systemPromptLen": 1000,
          "questionLen": 120, "outputLen": 64}
    p = _plan(_spec(dataset=ds, numPrompts=12), tmp_path)
    a = p.args
    assert p.dataset == "timed_trace" and _flag(a, "--dataset-name") == "timed_trace"
    assert _flag(a, "--timed-trace-chunk-hash-size") == "1000" and "--self-timed" in a
    assert "--no-self-timed" not in a
    assert _flag(a, "--dataset-path") == str(tmp_path / loadgen.TRACE_NAME)
    rows = p.trace_rows
    assert len(rows) == 12 and all(r["input_length"] == 1120 and r["output_length"] == 64 for r in rows)
    groups = [r["hash_ids"][0] for r in rows]
    assert sorted(groups) == sorted([0, 1, 2] * 4)          # promptsPerGroup questions per group
    questions = [tuple(r["hash_ids"][1:]) for r in rows]
    assert len(set(questions)) == 12 and all(len(q) == 1 for q in questions)
    # the default spec's Poisson 4 req/s, as timestamps (timed_trace needs one in every entry)
    ts = [r["timestamp"] for r in rows]
    assert ts[0] == 0.0 and ts == sorted(ts) and abs(ts[-1] - 11 / 4) < 1e-5 and "--request-rate" not in a
    no_rate = _plan(_spec(dataset=ds, arrival={"maxConcurrency": 2}, numPrompts=12), tmp_path)
    assert [r["timestamp"] for r in no_rate.trace_rows] == [0.0] * 12 and "--self-timed" in no_rate.args
    p.write_dataset(tmp_path / loadgen.TRACE_NAME)
    back = [json.loads(x) for x in (tmp_path / loadgen.TRACE_NAME).read_text().splitlines()]
    assert back == rows


def test_shared_prefix_prompts_recur_as_the_same_tokens_past_the_pool():
    """inference-perf's shared_prefix: a pool of numGroups x promptsPerGroup prompts, cycled."""
    ds = {"type": "shared-prefix", "numGroups": 3, "promptsPerGroup": 2, "systemPromptLen": 100,
          "questionLen": 250, "outputLen": 8}
    rows = _plan(_spec(dataset=ds, numPrompts=15)).trace_rows
    ids = [tuple(r["hash_ids"]) for r in rows]
    assert len(set(ids[:6])) == 6 and ids[6:12] == ids[:6] and ids[12:] == ids[:3]
    assert all(len(h) == 1 + 3 for h in ids)                # 100-token system chunk + ceil(250/100)
    by_group: dict[int, set] = {}
    for h in ids:
        by_group.setdefault(h[0], set()).add(h[1:])
    assert sorted(by_group) == [0, 1, 2] and all(len(q) == 2 for q in by_group.values())
    assert not set.intersection(*(set(x for q in qs for x in q) for qs in by_group.values()))


@pytest.mark.parametrize("process", ["constant", "poisson"])
def test_shared_prefix_with_a_request_rate_gets_generated_timestamps(tmp_path, process):
    """The crash: timed_trace rows without a `timestamp` were rejected by vllm bench
    ("Timestamp field 'timestamp' not found") when arrival.requestRate was given."""
    ds = {"type": "shared-prefix", "numGroups": 9, "promptsPerGroup": 5, "systemPromptLen": 100,
          "questionLen": 475, "outputLen": 248}
    p = _plan(_spec(dataset=ds, arrival={"process": process, "requestRate": 8}, numPrompts=None,
                    durationSeconds=30, seed=4), tmp_path)
    a = p.args
    assert p.num_prompts == 240 and _flag(a, "--num-prompts") == "240"
    assert "--self-timed" in a and "--no-self-timed" not in a
    assert "--request-rate" not in a and "--burstiness" not in a   # the timestamps carry the rate
    ts = [r["timestamp"] for r in p.trace_rows]
    assert all("timestamp" in r for r in p.trace_rows) and ts[0] == 0.0 and ts == sorted(ts)
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    if process == "constant":
        assert all(abs(g - 0.125) < 1e-6 for g in gaps)
    else:  # exponential gaps rescaled to a mean of exactly 1/8 s (as bench does); CV about 1
        mean = sum(gaps) / len(gaps)
        cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
        assert abs(mean - 0.125) < 1e-5 and 0.8 < cv < 1.2 and min(gaps) < 0.01 < 0.4 < max(gaps)
    # seeded: the same spec gives the same trace; the lengths do not depend on the arrivals
    again = _plan(_spec(dataset=ds, arrival={"process": process, "requestRate": 8}, numPrompts=None,
                        durationSeconds=30, seed=4), tmp_path)
    assert again.trace_rows == p.trace_rows
    no_rate = _plan(_spec(dataset=ds, arrival={}, numPrompts=240, seed=4), tmp_path)
    assert [r["hash_ids"] for r in no_rate.trace_rows] == [r["hash_ids"] for r in p.trace_rows]


def test_sharegpt_like_with_a_rate_is_self_timed_too():
    p = _plan(_spec(dataset={"type": "sharegpt-like"}, arrival={"process": "poisson", "requestRate": 2},
                    numPrompts=20))
    assert "--self-timed" in p.args and "--request-rate" not in p.args
    ts = [r["timestamp"] for r in p.trace_rows]
    assert len(ts) == 20 and ts[0] == 0.0 and ts == sorted(ts) and ts[-1] > 0


def test_sharegpt_like_draws_the_shipped_distribution_within_caps():
    p = _plan(_spec(dataset={"type": "sharegpt-like", "maxInputLen": 1024, "maxOutputLen": 512}, numPrompts=2000))
    ins = [r["input_length"] for r in p.trace_rows]
    outs = [r["output_length"] for r in p.trace_rows]
    assert min(ins) >= 4 and max(ins) <= 1024 and min(outs) >= 4 and max(outs) <= 512
    med_in, med_out = sorted(ins)[1000], sorted(outs)[1000]
    assert 0.8 * loadgen.SHAREGPT_LIKE["input"]["median"] < med_in < 1.2 * loadgen.SHAREGPT_LIKE["input"]["median"]
    assert 0.8 * loadgen.SHAREGPT_LIKE["output"]["median"] < med_out < 1.2 * loadgen.SHAREGPT_LIKE["output"]["median"]
    assert all(len(r["hash_ids"]) == -(-r["input_length"] // 16) for r in p.trace_rows)
    assert len({h for r in p.trace_rows for h in r["hash_ids"]}) == sum(len(r["hash_ids"]) for r in p.trace_rows)
    # the seed decides everything
    assert _plan(_spec(dataset={"type": "sharegpt-like"}, numPrompts=50)).trace_rows == \
        _plan(_spec(dataset={"type": "sharegpt-like"}, numPrompts=50)).trace_rows


def test_trace_replays_its_arrivals_self_timed(tmp_path):
    (tmp_path / "arrivals.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"arrival_s": 10.5, "input_tokens": 100, "output_tokens": 20},
                                          {"arrival_s": 10.0, "input_tokens": 50, "output_tokens": 5},
                                          {"arrival_s": 12.0, "input_tokens": 30, "output_tokens": 9}]))
    s = _spec(dataset={"type": "trace", "path": "arrivals.jsonl"}, arrival={}, numPrompts=3)
    p = _plan(s, tmp_path)
    assert "--self-timed" in p.args and "--request-rate" not in p.args and _flag(p.args, "--num-prompts") == "3"
    assert [(r["timestamp"], r["input_length"], r["output_length"]) for r in p.trace_rows] == \
        [(0.0, 50, 5), (0.5, 100, 20), (2.0, 30, 9)]
    # with a rate, the trace gives lengths only; the rate's timestamps are generated
    p = _plan(_spec(dataset={"type": "trace", "path": "arrivals.jsonl"},
                    arrival={"process": "constant", "requestRate": 1}, numPrompts=2), tmp_path)
    assert "--self-timed" in p.args and "--request-rate" not in p.args and len(p.trace_rows) == 2
    assert [(r["timestamp"], r["input_length"]) for r in p.trace_rows] == [(0.0, 50), (1.0, 100)]
    (tmp_path / "bad.jsonl").write_text('{"arrival_s": 1}\n')
    with pytest.raises(loadgen.WorkloadError, match="spec.workload.dataset.path.*input_tokens"):
        _plan(_spec(dataset={"type": "trace", "path": "bad.jsonl"}, numPrompts=1), tmp_path)


def test_stages_become_generated_arrival_timestamps():
    stages = [{"rate": 2, "durationSeconds": 5}, {"rate": 10, "durationSeconds": 2}]
    p = _plan(_spec(arrival={"process": "constant", "stages": stages}, numPrompts=None))
    assert p.dataset == "timed_trace" and "--self-timed" in p.args and "--request-rate" not in p.args
    ts = [r["timestamp"] for r in p.trace_rows]
    assert len(ts) == 30 and ts[:3] == [0.0, 0.5, 1.0] and ts[10] == 5.0 and abs(ts[11] - 5.1) < 1e-9
    assert all(r["input_length"] in range(409, 615) for r in p.trace_rows)  # random 512 ± 20%
    p = _plan(_spec(arrival={"process": "poisson", "stages": [{"rate": 50, "durationSeconds": 20}]}, numPrompts=None))
    ts = [r["timestamp"] for r in p.trace_rows]
    assert 850 < len(ts) < 1150 and ts == sorted(ts) and ts[-1] < 20


_BENCH_LOAD = r'''
import json, os, sys
from pathlib import Path
from revati import models
os.environ.update(models.prepare_offline_hub(models=["meta-llama/Llama-2-7b-hf"]))
from revati.run import loadgen
from revati.spec import spec_from_dict
out = Path(sys.argv[1])
spec = spec_from_dict(json.loads(sys.argv[2])).spec
r = models.resolve(spec.model)
tok = str(r.tokenizer or r.model)
lp = loadgen.plan(spec, base_url="http://127.0.0.1:1", model="m", tokenizer=tok, result_dir=out)
lp.write_dataset(out / loadgen.TRACE_NAME)
from vllm.benchmarks.datasets import get_samples
from vllm.benchmarks.serve import add_cli_args
from vllm.tokenizers import get_tokenizer
from vllm.utils.argparse_utils import FlexibleArgumentParser
p = FlexibleArgumentParser()
add_cli_args(p)
args = p.parse_args(lp.args)
samples = get_samples(args, get_tokenizer(tok))
print(json.dumps({"self_timed": args.self_timed, "ts": [s.timestamp for s in samples],
                  "prompts": [s.prompt for s in samples], "hash_ids": [r["hash_ids"] for r in lp.trace_rows]}))
'''


def test_vllm_bench_loads_a_shared_prefix_trace_at_a_rate(tmp_path):
    """vLLM 0.32's own bench parser and timed_trace loader accept the plan (they raised
    "Timestamp field 'timestamp' not found" before): the timestamps, the recurring prompts
    and the shared system prompts come out as planned."""
    import subprocess
    import sys

    d = copy.deepcopy(DEFAULT)
    d["spec"]["model"] = "meta-llama/Llama-2-7b-hf"
    d["spec"]["workload"] = {"dataset": {"type": "shared-prefix", "numGroups": 3, "promptsPerGroup": 2,
                                         "systemPromptLen": 100, "questionLen": 175, "outputLen": 8},
                             "arrival": {"process": "constant", "requestRate": 8}, "durationSeconds": 2}
    p = subprocess.run([sys.executable, "-c", _BENCH_LOAD, str(tmp_path), json.dumps(d)], capture_output=True,
                       text=True, timeout=600, env={**__import__("os").environ, "PYTHONHASHSEED": "0"})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["self_timed"] is True and got["ts"] == [i / 8 for i in range(16)]
    prompts, ids = got["prompts"], got["hash_ids"]
    assert all(len(x) == 275 for x in prompts)
    for i in range(16):
        for j in range(16):
            assert (prompts[i] == prompts[j]) == (ids[i] == ids[j])
            assert (prompts[i][:100] == prompts[j][:100]) == (ids[i][0] == ids[j][0])
    assert len({tuple(x) for x in prompts}) == 6 and prompts[6:12] == prompts[:6]
