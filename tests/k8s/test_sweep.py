"""EmulationSweep: grid expansion (order, names, child specs), path checks, and ranking.

Expected results are written out by hand here, not computed with the code under test.
"""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from revati.spec import spec_from_dict
from revati.spec.crds import EmulationSweepStatus
from revati.spec.sweep import EmulationSweep, SweepSpec, check_path, expand, gpus, rank

BASE = {
    "model": "meta-llama/Llama-3.1-8B",
    "gpu": "h100-sxm",
    "engine": {"args": {"max-num-batched-tokens": 8192}},
    "workload": {"dataset": {"type": "random", "inputLen": 512, "outputLen": 128},
                 "arrival": {"requestRate": 4}, "numPrompts": 100},
}


def _sweep(grid: dict, name: str = "s", **spec) -> dict:
    body = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulationSweep",
            "metadata": {"name": name, "namespace": "team-a", "uid": "1234", "resourceVersion": "7"},
            "spec": {"base": copy.deepcopy(BASE), "grid": grid,
                     "prices": {"h100-sxm": 3.0, "a100-80gb-sxm": 2.0}}}
    body["spec"].update(spec)
    return body


# -- expansion ----------------------------------------------------------------------------


def test_expansion_order_is_sorted_paths_last_fastest_and_names_are_indexed():
    # written in a different order than the sorted one: the order must not depend on it
    sweep = _sweep({"tensorParallelSize": [1, 2], "gpu": ["h100-sxm", "a100-80gb-sxm"],
                    "engine.args.max-num-seqs": [64, 256]}, name="sizing")
    children = expand(sweep)
    assert [c.name for c in children] == [f"sizing-{i}" for i in range(8)]
    assert [c.index for c in children] == list(range(8))
    assert [tuple(c.params.values()) for c in children] == [
        (64, "h100-sxm", 1), (64, "h100-sxm", 2), (64, "a100-80gb-sxm", 1), (64, "a100-80gb-sxm", 2),
        (256, "h100-sxm", 1), (256, "h100-sxm", 2), (256, "a100-80gb-sxm", 1), (256, "a100-80gb-sxm", 2)]
    assert list(children[0].params) == ["engine.args.max-num-seqs", "gpu", "tensorParallelSize"]
    reordered = _sweep({"engine.args.max-num-seqs": [64, 256], "tensorParallelSize": [1, 2],
                        "gpu": ["h100-sxm", "a100-80gb-sxm"]}, name="sizing")
    assert [c.params for c in expand(reordered)] == [c.params for c in children]


def test_child_specs_apply_params_at_their_paths_and_keep_the_base():
    sweep = _sweep({"engine.args.max-num-seqs": [64], "workload.arrival.requestRate": [2, 8],
                    "workload.dataset.inputLen": [1024]})
    before = copy.deepcopy(sweep)
    children = expand(sweep)
    assert sweep == before
    c = children[1]
    assert c.params == {"engine.args.max-num-seqs": 64, "workload.arrival.requestRate": 8,
                        "workload.dataset.inputLen": 1024}
    assert c.spec["engine"]["args"] == {"max-num-batched-tokens": 8192, "max-num-seqs": 64}
    assert c.spec["workload"]["arrival"] == {"requestRate": 8}
    assert c.spec["workload"]["dataset"] == {"type": "random", "inputLen": 1024, "outputLen": 128}
    assert c.spec["model"] == "meta-llama/Llama-3.1-8B" and c.spec["workload"]["numPrompts"] == 100
    assert c.body["apiVersion"] == "revati.dev/v1alpha1" and c.body["kind"] == "EmulatedDeployment"
    assert c.body["metadata"] == {"name": "s-1", "namespace": "team-a", "labels": {"revati.dev/sweep": "s"}}
    assert c.body["spec"] == c.spec
    assert spec_from_dict(c.body).spec.workload.arrival.requestRate == 8


def test_the_sweep_slo_goes_into_every_child_and_paths_may_create_parents():
    slo = {"ttftMs": {"p99": 500}, "tpotMs": {"p99": 50}}
    children = expand(_sweep({"emulation.predictor": ["roofline", "constant:1ms"]}, slo=slo))
    assert [c.spec["slo"] for c in children] == [{"ttftMs": {"p99": 500.0}, "tpotMs": {"p99": 50.0}}] * 2
    assert [c.spec["emulation"] for c in children] == [{"predictor": "roofline"}, {"predictor": "constant:1ms"}]


def test_grid_values_are_lists_of_any_spec_value_including_objects():
    ds = [{"type": "random", "inputLen": 128, "outputLen": 32},
          {"type": "shared-prefix", "numGroups": 2, "promptsPerGroup": 4, "systemPromptLen": 512,
           "questionLen": 32, "outputLen": 16}]
    children = expand(_sweep({"workload.dataset": ds}))
    assert [c.spec["workload"]["dataset"]["type"] for c in children] == ["random", "shared-prefix"]


@pytest.mark.parametrize("path", ["replica", "engine.bogus", "tensorParallelSize.x", "engine.args",
                                  "workload.dataset.nope", "engine.args.max-num-seqs.x", "slo.ttftMs.p95",
                                  "workload..seed", ""])
def test_bad_paths_are_rejected_naming_the_path(path):
    with pytest.raises(ValueError, match=repr(path).replace(".", r"\.")):
        check_path(path)
    with pytest.raises(ValidationError) as exc:
        EmulationSweep.model_validate(_sweep({path: [1]}))
    assert repr(path) in str(exc.value)


@pytest.mark.parametrize("path", ["tensorParallelSize", "gpu", "engine.args.max-num-seqs", "slo.ttftMs.p99",
                                  "workload.arrival.requestRate", "workload.dataset.systemPromptLen",
                                  "emulation.timewarp", "workload.dataset"])
def test_good_paths_pass(path):
    check_path(path)


def test_children_that_are_not_valid_specs_are_rejected_naming_the_path():
    cases = [({"tensorParallelSize": [1, 16]}, ["grid child 1", "tensorParallelSize=16", "tensorParallelSize"]),
             ({"workload.dataset.inputLen": [0]}, ["grid child 0", "workload.dataset.inputLen"]),
             ({"engine.args.port": [9000]}, ["engine.args", "port"]),
             ({"gpu": ["h100-sxm", "h200"]}, ["prices", "h200", "grid child 1"]),
             ({"gpu": ["b300"]}, ["gpu", "b300"])]
    for grid, words in cases:
        with pytest.raises(ValidationError) as exc:
            EmulationSweep.model_validate(_sweep(grid))
        for w in words:
            assert w in str(exc.value), (grid, w, str(exc.value))


def test_grid_size_prices_and_max_parallel_limits():
    with pytest.raises(ValidationError, match="260 children, more than 256"):
        EmulationSweep.model_validate(_sweep({"workload.seed": list(range(20)), "workload.numPrompts": list(range(1, 14))}))
    with pytest.raises(ValidationError, match="at most 256 items"):
        EmulationSweep.model_validate(_sweep({"workload.seed": list(range(257))}))
    assert len(expand(_sweep({"workload.seed": list(range(256))}))) == 256
    with pytest.raises(ValidationError, match="grid"):
        EmulationSweep.model_validate(_sweep({"workload.seed": []}))
    with pytest.raises(ValidationError, match="grid"):
        EmulationSweep.model_validate(_sweep({}))
    with pytest.raises(ValidationError, match="prices.h100: unknown GPU"):
        EmulationSweep.model_validate(_sweep({"workload.seed": [1]}, prices={"h100": 1.0, "h100-sxm": 1.0}))
    with pytest.raises(ValidationError, match="prices"):
        EmulationSweep.model_validate(_sweep({"workload.seed": [1]}, prices={"h100-sxm": 0}))
    with pytest.raises(ValidationError, match="no price for GPU 'h100-sxm'"):
        EmulationSweep.model_validate(_sweep({"workload.seed": [1]}, prices={"a100-80gb-sxm": 1.0}))
    assert EmulationSweep.model_validate(_sweep({"workload.seed": [1]})).spec.maxParallel == 2
    with pytest.raises(ValidationError, match="maxParallel"):
        EmulationSweep.model_validate(_sweep({"workload.seed": [1]}, maxParallel=0))
    with pytest.raises(ValidationError, match="name"):
        EmulationSweep.model_validate(_sweep({"workload.seed": [1]}, name="a" * 48))


def test_gpus_is_tp_times_pp_times_replicas():
    assert gpus({"tensorParallelSize": 2, "pipelineParallelSize": 3, "replicas": 2}) == 12
    assert gpus({"tensorParallelSize": 4}) == 4
    assert gpus({}) == 1


# -- ranking ------------------------------------------------------------------------------


def _m(ttft99, tpot99, thr, completed=100, **extra):
    return {"ttftMs": {"p50": ttft99 / 2, "p99": ttft99}, "tpotMs": {"p50": tpot99 / 2, "p99": tpot99},
            "outputThroughput": thr, "completed": completed, "failed": 0, **extra}


def _spec(grid, **kw) -> SweepSpec:
    return EmulationSweep.model_validate(_sweep(grid, **kw)).spec


def test_rank_cheapest_pareto_and_ranking():
    # children: s-0 h100 TP1 ($3/h), s-1 h100 TP2 ($6/h), s-2 a100 TP1 ($2/h), s-3 a100 TP2 ($4/h)
    spec = _spec({"gpu": ["h100-sxm", "a100-80gb-sxm"], "tensorParallelSize": [1, 2]},
                 slo={"ttftMs": {"p99": 500}, "tpotMs": {"p99": 50}})
    params = [{"gpu": g, "tensorParallelSize": tp} for g in ("h100-sxm", "a100-80gb-sxm") for tp in (1, 2)]
    results = [(400, 40, 1000), (600, 20, 1500), (900, 45, 700), (450, 48, 1200)]  # ttft99, tpot99, thr
    children = [{"name": f"s-{i}", "params": p, "phase": "Succeeded", "metrics": _m(*r)}
                for i, (p, r) in enumerate(zip(params, results))]
    status = rank(spec, children)
    EmulationSweepStatus.model_validate(status)
    rows = {c["name"]: c for c in status["children"]}
    assert [(rows[n]["gpus"], rows[n]["costPerHour"], rows[n]["meetsSlo"]) for n in ("s-0", "s-1", "s-2", "s-3")] == \
        [(1, 3.0, True), (2, 6.0, False), (1, 2.0, False), (2, 4.0, True)]  # s-1: TTFT 600 > 500; s-2: 900
    assert rows["s-1"]["metrics"] == children[1]["metrics"] and rows["s-1"]["params"] == params[1]
    assert status["cheapest"] == {"name": "s-0", "params": {"gpu": "h100-sxm", "tensorParallelSize": 1},
                                  "gpus": 1, "costPerHour": 3.0}
    # s-2 (700 tok/s, 900 ms) is dominated by s-0 (1000, 400); s-0, s-3, s-1 trade throughput for TTFT
    assert status["pareto"] == ["s-0", "s-3", "s-1"]
    assert status["ranking"] == ["s-0", "s-3", "s-2", "s-1"]  # meeting the SLO first, then by cost
    assert status["progress"] == "4/4"


def test_rank_ties_unfinished_and_failed_children():
    # t-0 h100 x1 ($3), t-1 h100 x2 ($6), t-2 a100 x1 ($1.5), t-3 a100 x2 ($3)
    spec = _spec({"gpu": ["h100-sxm", "a100-80gb-sxm"], "replicas": [1, 2]},
                 prices={"h100-sxm": 3.0, "a100-80gb-sxm": 1.5}, slo={"ttftMs": {"p99": 500}})
    children = [
        {"name": "t-0", "params": {"gpu": "h100-sxm", "replicas": 1}, "phase": "Succeeded", "metrics": _m(300, 40, 900)},
        {"name": "t-1", "params": {"gpu": "h100-sxm", "replicas": 2}, "phase": "Failed", "metrics": _m(100, 10, 5000)},
        {"name": "t-2", "params": {"gpu": "a100-80gb-sxm", "replicas": 1}, "phase": "Running", "metrics": _m(50, 5, 9000)},
        {"name": "t-3", "params": {"gpu": "a100-80gb-sxm", "replicas": 2}, "phase": "Succeeded", "metrics": _m(250, 30, 1000)},
    ]
    status = rank(spec, children)
    assert [c["costPerHour"] for c in status["children"]] == [3.0, 6.0, 1.5, 3.0]
    assert [c["meetsSlo"] for c in status["children"]] == [True, False, False, True]
    assert status["cheapest"]["name"] == "t-3"  # same $3/h as t-0, lower p99 TPOT (30 < 40)
    assert status["pareto"] == ["t-3"]  # the failed and the running child are left out
    assert status["ranking"] == ["t-3", "t-0"]
    assert status["progress"] == "3/4"
    assert rank(spec, children[:1])["progress"] == "1/4"


def test_rank_without_any_child_meeting_the_slo():
    spec = _spec({"tensorParallelSize": [1, 2]}, slo={"e2elMs": {"p90": 1000}})
    children = [{"name": "s-0", "params": {"tensorParallelSize": 1}, "phase": "Succeeded",
                 "metrics": _m(100, 10, 100, e2elMs={"p99": 900})},  # no p90 measured: not met
                {"name": "s-1", "params": {"tensorParallelSize": 2}, "phase": "Succeeded",
                 "metrics": _m(100, 10, 100, e2elMs={"p90": 1200, "p99": 1500})}]
    status = rank(spec, children)
    assert status["cheapest"] is None
    assert [c["meetsSlo"] for c in status["children"]] == [False, False]
    assert status["ranking"] == ["s-0", "s-1"]  # $3 then $6
    assert status["pareto"] == ["s-0", "s-1"]  # equal points: neither dominates the other


def test_slo_falls_back_to_the_base_and_no_slo_means_any_success():
    base_slo = {**copy.deepcopy(BASE), "slo": {"tpotMs": {"p50": 10}}}
    spec = _spec({"tensorParallelSize": [1]}, base=base_slo)
    child = {"name": "s-0", "params": {"tensorParallelSize": 1}, "phase": "Succeeded", "metrics": _m(100, 30, 10)}
    assert rank(spec, [child])["children"][0]["meetsSlo"] is False  # tpot p50 15 > 10
    child["metrics"]["tpotMs"]["p50"] = 9.5
    assert rank(spec, [child])["children"][0]["meetsSlo"] is True
    no_slo = _spec({"tensorParallelSize": [1]})
    assert rank(no_slo, [child])["cheapest"]["name"] == "s-0"
    empty = {**child, "metrics": _m(100, 30, 10, completed=0)}
    assert rank(no_slo, [empty])["cheapest"] is None  # nothing completed: no success to speak of
    assert rank(no_slo, [{**child, "phase": "Pending", "metrics": None}])["children"][0]["meetsSlo"] is False


def test_a_p90_target_is_met_by_a_report_s_p90():
    """A child's metrics as the operator writes them from report.json carry p90, so a p90 SLO is
    judged on the measured p90, not taken as unmeasured."""
    from revati.spec.crds import status_from_report

    spec = _spec({"tensorParallelSize": [1]}, slo={"e2elMs": {"p90": 1000}})
    report = {"completed": 10, "failed": 0, "p50_e2el_ms": 600.0, "p90_e2el_ms": 900.0, "p99_e2el_ms": 1400.0,
              "p50_ttft_ms": 20.0, "p99_ttft_ms": 40.0, "p50_tpot_ms": 8.0, "p99_tpot_ms": 9.0,
              "output_throughput": 100.0, "request_throughput": 1.0}
    child = {"name": "s-0", "params": {"tensorParallelSize": 1}, "phase": "Succeeded",
             "metrics": status_from_report(report)["metrics"]}
    assert rank(spec, [child])["children"][0]["meetsSlo"] is True
    report["p90_e2el_ms"] = 1100.0
    child["metrics"] = status_from_report(report)["metrics"]
    assert rank(spec, [child])["children"][0]["meetsSlo"] is False
