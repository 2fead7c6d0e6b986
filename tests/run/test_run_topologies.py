"""`revati run` beyond one TP=1 replica, against live servers under the time warp: two
replicas behind the router with a shared-prefix workload in constant-rate stages, and TP=2
with a trace of arrivals that the load generator replays in virtual time. Minutes on 2 cores."""

from __future__ import annotations

import json
import time

import pytest

from tests.run.test_run_e2e import _start, _survivors, _wait_collecting

pytestmark = pytest.mark.slow


def _spec(name: str, **spec) -> dict:
    return {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": name},
            "spec": {"model": "meta-llama/Llama-3.1-8B", "gpu": "h100-sxm", **spec}}


def _run(tmp_path, spec: dict, timeout_s: float = 1500) -> tuple[dict, str, object]:
    p, out = _start(tmp_path, spec)
    seen: dict[int, float] = {}
    _wait_collecting(p, seen, timeout_s)
    log = p.stdout.read()
    print(log[-5000:])
    assert p.returncode == 0, log[-4000:]
    time.sleep(1)
    assert not _survivors(seen), _survivors(seen)
    return json.loads((out / "report.json").read_text()), log, out


def test_two_replicas_shared_prefix_in_constant_stages(tmp_path):
    spec = _spec("two-replicas", replicas=2,
                 engine={"args": {"enforce-eager": True, "max-model-len": 2048, "max-num-seqs": 8}},
                 workload={"dataset": {"type": "shared-prefix", "numGroups": 2, "promptsPerGroup": 4,
                                       "systemPromptLen": 256, "questionLen": 32, "outputLen": 8},
                           "arrival": {"process": "constant",
                                       "stages": [{"rate": 2, "durationSeconds": 2}, {"rate": 4, "durationSeconds": 1}]},
                           "seed": 3})
    rep, log, out = _run(tmp_path, spec)
    e = rep["emulation"]
    assert rep["completed"] == 8 and rep["failed"] == 0  # 2/s x 2 s + 4/s x 1 s
    topo = e["topology"]
    assert (topo["tensor_parallel_size"], topo["pipeline_parallel_size"], topo["replicas"], topo["router"]) == \
        (1, 1, 2, True)
    assert e["num_gpus"] == 2 and any("round-robin" in n for n in e["notes"]) and "round-robin router" in log
    assert e["timewarp"] is True
    # Round robin: the requests alternate (bench's own probe requests included).
    counts = topo["router_requests"]
    print("router requests per replica", counts)
    assert len(counts) == 2 and sum(counts) >= 8 and max(counts) - min(counts) <= 1
    # Constant stages: arrivals every 0.5 s, then every 0.25 s, in virtual time.
    starts = sorted(r["start_s"] for r in (json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    print("gaps", gaps)
    assert all(abs(g - 0.5) < 0.03 for g in gaps[:3]) and all(abs(g - 0.25) < 0.03 for g in gaps[4:])
    # Prefix caching saw the shared system prompt: on each replica a later member of a group
    # starts its prefill from cached tokens (a block-aligned part of the 256-token prefix).
    for i in (0, 1):
        steps = [json.loads(x) for x in (out / f"steps.replica{i}.jsonl").read_text().splitlines()]
        cached = [c for s in steps if s["num_prefill"] for q, c in zip(s["query_lens"], s["context_lens"]) if q > 1]
        print(f"replica {i}: prefill contexts {cached}")
        assert steps and max(cached) >= 240


def test_tp2_replays_a_trace_in_virtual_time(tmp_path):
    arrivals = [0.0, 0.25, 1.0, 4.0, 20.0, 60.0]
    lens = [(200, 8), (120, 16), (300, 4), (64, 12), (256, 8), (100, 6)]
    (tmp_path / "arrivals.jsonl").write_text("\n".join(
        json.dumps({"arrival_s": a, "input_tokens": i, "output_tokens": o}) for a, (i, o) in zip(arrivals, lens)))
    spec = _spec("tp2-trace", tensorParallelSize=2,
                 engine={"args": {"enforce-eager": True, "max-model-len": 2048, "max-num-seqs": 8}},
                 workload={"dataset": {"type": "trace", "path": str(tmp_path / "arrivals.jsonl")},
                           "arrival": {}, "numPrompts": len(arrivals), "seed": 1})
    rep, log, out = _run(tmp_path, spec)
    e = rep["emulation"]
    assert rep["completed"] == 6 and rep["failed"] == 0
    assert e["topology"]["tensor_parallel_size"] == 2 and e["num_gpus"] == 2
    assert "--disable-custom-all-reduce" in e["emulator_engine_args"]
    assert any("custom all-reduce" in n for n in e["notes"])
    rows = sorted((json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()),
                  key=lambda r: r["start_s"])
    # The arrivals are replayed on the virtual clock: each request starts at its trace time.
    for r, a, (i, o) in zip(rows, arrivals, lens):
        assert abs(r["start_s"] - a) < 0.05, (r["start_s"], a)
        assert r["input_tokens"] == i and r["output_tokens"] == o
    # 60 virtual seconds of mostly idle trace cost far less wall time: the clock jumps.
    assert e["virtual_s"] >= 60 and e["wall_s"] < 60 and e["speedup"] > 1
    # Both ranks' collectives were recorded and predicted.
    assert e["predicted_gpu_ms_by_kind"].get("collective", 0) > 0
