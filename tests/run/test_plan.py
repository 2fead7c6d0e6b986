"""The deployment plan (revati/run/plan.py), `revati demo`'s built-in spec, and the one
emulation block builder (report.EmulationReport) as the local and the pod runner fill it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from revati.cli import main
from revati.launch.stats import summarize_stats
from revati.run import report
from revati.run.plan import DeploymentPlan, demo_spec, flags_to_args
from revati.spec import SpecError, load_spec
from revati.timekeeper.timekeeper import TimekeeperStats

REPO = Path(__file__).resolve().parents[2]

#: The emulation block of `revati run`'s report before the plan and the builder were shared
#: (revati/run/orchestrator.py at 8e8ee72), in order.
LOCAL_KEYS = ["timewarp", "latency_clock", "virtual_s", "wall_s", "speedup", "setup_wall_s", "total_wall_s",
              "jumps", "jumped_s", "jit_freezes", "jit_frozen_wall_s", "predictor_holds", "predictor_held_wall_s",
              "timekeeper", "dilation", "dilation_effective", "dilation_how", "host_contention", "host_cores",
              "contention_factor", "shim_steps", "graph_launches", "predictor", "predicted_gpu_ms_by_family",
              "predicted_gpu_ms_by_kind", "gpu", "gpu_name", "num_gpus", "model", "topology", "engine_args",
              "emulator_engine_args", "load_generator", "trace", "versions", "notes"]
PREDICTOR_KEYS = ["source", "duration_source", "shim_cache_hit_rate", "coverage", "unmapped_ops", "sidecar_ops",
                  "sidecar_hit_rate", "fallbacks_total", "fallbacks", "physics_clamps"]


def test_flags_become_engine_args():
    assert flags_to_args(["--enforce-eager", "--max-model-len", "2048", "--kv-cache-dtype=fp8"]) == {
        "enforce-eager": True, "max-model-len": "2048", "kv-cache-dtype": "fp8"}
    with pytest.raises(ValueError, match="expected --name"):
        flags_to_args(["2048"])


def test_demo_is_a_spec_with_the_old_defaults():
    spec = demo_spec(serve_args=["--enforce-eager"])
    s = spec.spec
    assert (s.model, s.gpu, s.replicas, s.emulation.timewarp) == ("meta-llama/Llama-3.1-8B", "h100-sxm", 1, True)
    assert (s.workload.numPrompts, s.workload.dataset.inputLen, s.workload.dataset.outputLen) == (20, 128, 32)
    assert s.workload.arrival.requestRate is None and s.engine.args == {"enforce-eager": True}
    assert demo_spec(request_rate="2.5").spec.workload.arrival.requestRate == 2.5
    with pytest.raises(SpecError, match="set by the emulator"):
        demo_spec(serve_args=["--port", "1"])


def test_demo_rejects_a_bad_flag_before_starting_anything(capsys):
    assert main(["demo", "--", "--tensor-parallel-size", "2"]) == 2
    assert "tensor-parallel-size" in capsys.readouterr().err


def _plan() -> DeploymentPlan:
    spec = load_spec(REPO / "examples" / "default.yaml")
    return DeploymentPlan.of(spec, REPO / "examples")


def test_the_plan_serves_with_the_specs_engine(tmp_path):
    plan = _plan()
    assert (plan.engine.name, plan.engine.version) == ("vllm", plan.spec.spec.engine.version)
    cmd = plan.serve_command(host="h", port=1)
    assert cmd[1:3] == ["serve", plan.serve.model] and cmd[-len(plan.serve.serve_args):] == plan.serve.serve_args
    lp = plan.load(base_url="http://x:1", model="m", result_dir=tmp_path)
    assert lp.args[:2] == ["--backend", "vllm"]
    assert plan.start_load(lp, tmp_path) == plan.engine.bench_command(lp.args)
    assert (tmp_path / "bench.cmd").read_text() == "vllm bench serve " + " ".join(lp.args) + "\n"


def _block(plan, lp, **parts) -> dict:
    return report.EmulationReport(plan, lp, latency_clock="c", virtual_s=4.0, wall_s=2.0, total_wall_s=9.0,
                                  notes=[], **parts).block()


def test_the_local_block_keeps_its_keys_whatever_it_could_fill(tmp_path):
    plan = _plan()
    lp = plan.load(base_url="http://x:1", model="m", result_dir=tmp_path)
    tk = SimpleNamespace(stats=TimekeeperStats(jumps=3, jumped_ns=10**9, holds=2, held_ns=5 * 10**8, turns=7))
    gov = SimpleNamespace(cores=2, mode="schedstat", stats=SimpleNamespace(as_dict=lambda: {"mean_factor": 1.5}))
    shim = summarize_stats(tmp_path / "stats")  # no process wrote any: every count is zero
    full = _block(plan, lp, setup_wall_s=1.0, clock=report.ClockFacts(tk, gov, 2.0, "given"), shim_stats=shim,
                  sidecar_stats={}, trace={})
    assert list(full) == LOCAL_KEYS and list(full["predictor"]) == PREDICTOR_KEYS
    assert (full["speedup"], full["jumps"], full["predictor_held_wall_s"], full["host_cores"]) == (2.0, 3, 0.5, 2)
    assert full["contention_factor"] == {"mean_factor": 1.5, "measure": "schedstat"} and full["trace"] is None
    assert full["timekeeper"]["turns"] == 7 and full["timekeeper"]["jumps"] == 3
    # the time warp off: no Timekeeper, no governor; the keys stay, their values are null
    off = _block(plan, lp, setup_wall_s=1.0, clock=report.ClockFacts(), shim_stats=shim, sidecar_stats={}, trace={})
    assert list(off) == LOCAL_KEYS and off["jumps"] is None and off["contention_factor"] is None
    assert off["timekeeper"] is None


def test_the_pod_block_leaves_out_what_a_pod_cannot_know(tmp_path):
    plan = _plan()
    lp = plan.load(base_url="http://x:1", model="m", result_dir=tmp_path)
    pod = _block(plan, lp, router_requests=[2, 1], extra={"platform": "kubernetes"})
    left_out = {"setup_wall_s", "jumps", "timekeeper", "jumped_s", "jit_freezes", "jit_frozen_wall_s", "predictor_holds",
                "predictor_held_wall_s", "dilation_effective", "dilation_how", "host_cores", "contention_factor",
                "shim_steps", "graph_launches", "predicted_gpu_ms_by_family", "predicted_gpu_ms_by_kind", "trace"}
    assert list(pod) == [k for k in LOCAL_KEYS if k not in left_out] + ["platform"]
    assert pod["predictor"] == {"source": "sidecar"} and pod["topology"]["router_requests"] == [2, 1]
    assert None not in (pod["virtual_s"], pod["wall_s"], pod["speedup"], pod["total_wall_s"])


def test_report_versions_name_the_emulated_engine_not_the_harness():
    from revati import engines
    from revati.run.report import versions

    v = versions(engines.get("vllm", "0.15.1"))
    # the emulated build (its own environment), and revati's vLLM as the load generator
    assert (v["engine"], v["vllm"], v["torch"]) == ("vllm", "0.15.1", "2.9.1")
    assert v["harness_vllm"] == versions()["vllm"]
    s = versions(engines.get("sglang"))
    assert s["engine"] == "sglang" and s["sglang"] == engines.get("sglang").version and "vllm" not in s
