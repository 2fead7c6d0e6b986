"""`revati explain`: a synthetic step log with known parts, and (slow) real vLLM runs under the
emulator whose every step's anatomy must add up to the step, with the ranks of a TP group in
files of their own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati.run import explain

REPO = Path(__file__).resolve().parents[2]


def _step(n, kind, reqs, dur, ms, gpu_ms, *, rank=0, tokens=None):
    pre, dec = {"decode": (0, reqs), "mixed": (1, reqs - 1), "prefill": (reqs, 0)}[kind]
    return {"step": n, "pid": 100 + rank, "rank": rank, "num_reqs": reqs, "num_prefill": pre, "num_decode": dec,
            "num_tokens": tokens or reqs, "t": n, "t_start": n, "t_end": n + dur / 1e3, "dur_ms": dur,
            "anatomy": {"ms": ms, "gpu_ms": gpu_ms, "gpu_busy_ms": sum(gpu_ms.values()), "gpu_work_ms": 9.0,
                        "cpu_ms": ms.get("runner", 0) + ms.get("sched", 0), "untracked_ms": 0.0}}


def _write(path: Path, steps: list[dict]) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in steps))


def test_explain_a_synthetic_step_log(tmp_path):
    # Decode steps of 12 ms: the GPU busy 9 ms (of which 2 ms during the runner's CPU and 7 ms
    # of GPU sync), then 2 ms of scheduler CPU and 1 ms of runner CPU with the GPU idle.
    dec = [_step(i, "decode", 3, 12.0, {"runner": 3.0, "sched": 2.0, "gpu": 7.0},
                 {"runner": 2.0, "gpu": 7.0}) for i in range(1, 11)]
    # One decode step followed by 50 ms of engine idle time: idle is apart, not in the step.
    dec.append(_step(11, "decode", 3, 62.0, {"runner": 3.0, "sched": 2.0, "gpu": 7.0, "idle": 50.0},
                     {"runner": 2.0, "gpu": 7.0}))
    # Mixed steps of 20 ms with 2 ms of sidecar misses and 1 ms of lock waits, GPU idle.
    mixed = [_step(20 + i, "mixed", 6, 20.0, {"runner": 5.0, "gpu": 12.0, "sidecar": 2.0, "cond": 1.0},
                   {"runner": 1.0, "gpu": 12.0}, tokens=300) for i in range(4)]
    # The last step's end was not seen (the process exited): no anatomy.
    last = dict(dec[0], step=99, dur_ms=None, t_end=None, anatomy=None)
    _write(tmp_path / "steps.replica0.jsonl", dec + mixed + [last])
    # Rank 1 of the same replica, its own file: the same steps, 0.5 ms longer.
    rank1 = [dict(s, rank=1, pid=101, dur_ms=s["dur_ms"] + 0.5,
                  anatomy=dict(s["anatomy"], ms={**s["anatomy"]["ms"], "yield": 0.5})) for s in dec + mixed]
    _write(tmp_path / "steps.replica0.rank1.jsonl", rank1)

    rc = subprocess.run([sys.executable, "-m", "revati.cli", "explain", str(tmp_path)], capture_output=True,
                        text=True, cwd=REPO, timeout=120)
    print(rc.stdout)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    assert "replica0/rank0" in rc.stdout and "replica0/rank1" in rc.stdout and "cross-rank" in rc.stdout
    rep = json.loads((tmp_path / "explain.json").read_text())
    assert (tmp_path / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r0 = rep["ranks"]["replica0/rank0"]
    assert r0["steps"] == 16 and r0["with_anatomy"] == 15 and r0["without_anatomy"] == 1
    assert r0["check"] == {"tolerance": 0.01, "within": 15, "of": 15, "worst": 0.0}
    assert r0["engine_core_thread"] is True
    groups = {(g["kind"], g["bucket"]): g for g in r0["groups"]}
    assert set(groups) == {("decode", "2-4"), ("mixed", "5-8")}
    d = groups[("decode", "2-4")]
    assert d["count"] == 11 and d["mean_ms"] == pytest.approx(12.0) and d["idle_ms"] == pytest.approx(50 / 11)
    assert d["parts_ms"]["gpu_busy"] == pytest.approx(9.0)
    assert d["parts_ms"]["cpu_runner"] == pytest.approx(1.0) and d["parts_ms"]["cpu_sched"] == pytest.approx(2.0)
    assert d["parts_ms"]["wait_gpu"] == pytest.approx(0.0) and d["residual_ms"] == pytest.approx(0.0)
    m = groups[("mixed", "5-8")]
    assert m["mean_ms"] == pytest.approx(20.0) and m["tokens"] == 300
    assert m["parts_ms"]["gpu_busy"] == pytest.approx(13.0) and m["parts_ms"]["cpu_runner"] == pytest.approx(4.0)
    assert m["parts_ms"]["sidecar"] == pytest.approx(2.0) and m["parts_ms"]["wait_lock"] == pytest.approx(1.0)
    assert sum(m["parts_ms"].values()) == pytest.approx(m["mean_ms"])
    r1 = rep["ranks"]["replica0/rank1"]
    assert r1["groups"][0]["parts_ms"]["wait_process"] == pytest.approx(0.5)
    x = rep["cross_rank"]["replica0/rank1"]
    assert x["matched"] == 15 and x["mean_abs_diff_ms"] == pytest.approx(0.5)


def test_the_check_fails_when_the_parts_do_not_add_up(tmp_path):
    bad = _step(1, "decode", 1, 10.0, {"runner": 5.0, "gpu": 4.0}, {"gpu": 4.0})  # 9 of 10 ms
    _write(tmp_path / "steps.replica0.jsonl", [bad])
    rep = explain.explain(tmp_path)
    r = rep["ranks"]["replica0/rank0"]
    assert r["check"]["within"] == 0 and r["check"]["worst"] == pytest.approx(0.1)
    assert r["groups"][0]["residual_ms"] == pytest.approx(1.0)
    assert explain.explain_main(str(tmp_path), plot=False) == 1


def test_steps_before_the_benchmark_are_left_out(tmp_path):
    warm = _step(1, "prefill", 256, 3000.0, {"runner": 1000.0, "frozen": 2000.0}, {})  # vLLM's warm-up
    dec = [_step(i, "decode", 2, 10.0, {"runner": 2.0, "gpu": 8.0}, {"gpu": 8.0}) for i in range(10, 14)]
    _write(tmp_path / "steps.replica0.jsonl", [warm, *dec])
    (tmp_path / "bench.json").write_text(json.dumps({"start_times": [9.5, 11.0, None]}))  # the steps' clock
    rep = explain.explain(tmp_path)
    assert rep["bench_start"] == 9.5 and rep["steps_before_bench"] == {"replica0/rank0": 1}
    assert [(g["kind"], g["count"]) for g in rep["ranks"]["replica0/rank0"]["groups"]] == [("decode", 4)]
    every = explain.explain(tmp_path, all_steps=True)
    assert [g["kind"] for g in every["ranks"]["replica0/rank0"]["groups"]] == ["decode", "prefill"]


def test_buckets_and_kinds():
    assert [explain.bucket_of(n) for n in (1, 2, 4, 5, 16, 17, 64, 128, 129, 4000)] == [
        "1", "2-4", "2-4", "5-8", "9-16", "17-32", "33-64", "65-128", "129+", "129+"]
    assert explain.kind_of({"num_prefill": 0, "num_decode": 3}) == "decode"
    assert explain.kind_of({"num_prefill": 1, "num_decode": 3}) == "mixed"
    assert explain.kind_of({"num_prefill": 2, "num_decode": 0}) == "prefill"


# ------------------------------------------------------------------------ real vLLM (slow)


def _check_run(out: Path, ranks: int) -> dict:
    logs = explain.step_logs(out)
    assert sorted(logs) == [f"replica0/rank{r}" for r in range(ranks)], logs
    for name, path in logs.items():
        steps = explain.read_steps(path)
        rank = int(name.rsplit("rank", 1)[1])
        assert steps and all(s["rank"] == rank for s in steps), name  # each rank in its own file
        assert len({s["pid"] for s in steps}) == 1, name
        done = [s for s in steps if s.get("anatomy")]
        assert len(done) >= len(steps) - 1  # the last one may be open at exit
        for a, b in zip(steps, steps[1:]):  # one thread's steps, back to back, none halved
            assert b["step"] == a["step"] + 1 and a["t_end"] == b["t_start"]
        for s in done:
            total = sum(s["anatomy"]["ms"].values())
            # Within 1% of the step as the clock read it around the counters' reads at its ends
            lo, hi = s["dur_ms"] - s["t_end_read_ms"], s["dur_ms"] + s["t_read_ms"]
            assert 0.99 * lo <= total <= 1.01 * hi, (name, s["step"], total, s["dur_ms"], s["t_read_ms"],
                                                     s["t_end_read_ms"])
            crit = explain.critical_parts(s)
            assert sum(v for k, v in crit.items()) == pytest.approx(total, rel=1e-6, abs=1e-6)
            assert s["anatomy"]["gpu_work_ms"] > 0  # every step launches its forward
    rep = explain.explain(out)
    print(json.dumps({k: [(g["kind"], g["bucket"], g["count"], round(g["mean_ms"], 2),
                           {p: round(v, 2) for p, v in g["parts_ms"].items() if v}) for g in r["groups"]]
                      for k, r in rep["ranks"].items()}, indent=1))
    rc = subprocess.run([sys.executable, "-m", "revati.cli", "explain", str(out)], capture_output=True, text=True,
                        cwd=REPO, timeout=120)
    print(rc.stdout)
    assert (out / "explain.png").exists() and (out / "explain.json").exists()
    return rep


@pytest.mark.slow
def test_every_step_of_a_real_vllm_run_adds_up(tmp_path):
    from tests.run.test_run_e2e import SMALL, _start, _wait_collecting

    p, out = _start(tmp_path, SMALL)
    _wait_collecting(p, {}, 1500)
    log = p.stdout.read()
    assert p.returncode == 0, log[-4000:]
    rep = _check_run(out, ranks=1)
    r = rep["ranks"]["replica0/rank0"]
    assert r["engine_core_thread"]  # TP=1: the model runner runs on the engine core's thread
    dec = [g for g in r["groups"] if g["kind"] == "decode"]
    assert dec and all(g["parts_ms"]["gpu_busy"] > 1 and g["parts_ms"]["cpu_runner"] > 0 for g in dec)


@pytest.mark.slow
def test_tp2_ranks_are_kept_apart(tmp_path):
    from tests.run.test_run_e2e import _start, _wait_collecting

    spec = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "tp2"},
            "spec": {"model": "meta-llama/Llama-3.1-8B", "gpu": "h100-sxm", "tensorParallelSize": 2,
                     "engine": {"args": {"enforce-eager": True, "max-model-len": 2048, "max-num-seqs": 8}},
                     "workload": {"dataset": {"type": "random", "inputLen": 128, "outputLen": 12, "rangeRatio": 0.2},
                                  "arrival": {"process": "poisson", "requestRate": 4}, "numPrompts": 6, "seed": 1},
                     "slo": {"ttftMs": {"p99": 60000}}}}
    p, out = _start(tmp_path, spec)
    _wait_collecting(p, {}, 1500)
    log = p.stdout.read()
    assert p.returncode == 0, log[-4000:]
    rep = _check_run(out, ranks=2)
    for name in ("replica0/rank0", "replica0/rank1"):
        r = rep["ranks"][name]
        assert not r["engine_core_thread"]  # workers: the scheduler is another process
        # the all-reduces' predicted time is in each rank's GPU work
        assert all(g["parts_ms"]["gpu_busy"] > 1 for g in r["groups"])
    x = rep["cross_rank"]["replica0/rank1"]
    # Both ranks run every step, with the same batch, for about the same virtual time.
    assert x["matched"] >= 10 and x["same_batch"] == x["matched"]
    assert abs(x["mean_ms"] - x["mean_ms_rank0"]) <= 0.1 * x["mean_ms_rank0"]
