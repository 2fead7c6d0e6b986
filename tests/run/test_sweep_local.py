"""`revati sweep FILE` (revati/run/sweep_local.py): resuming, ranking and --parallel with an
injected fake runner (it writes a report.json as `revati run` would), the sweep file's
errors, and one slow end-to-end sweep of two tiny real runs."""

from __future__ import annotations

import _thread
import copy
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from revati.cli import main
from revati.run import plots, sweep_local
from revati.run.sweep_local import (
    CHILD_LOG_NAME, CHILD_SPEC_NAME, PLOT_NAME, RESULT_NAME, STATE_NAME, SweepFileError, absolute_paths,
    load_sweep, read_report, run_sweep, table,
)
from revati.spec.crds import status_from_report
from revati.spec.sweep import EmulationSweep, expand, rank

BASE = {
    "model": "meta-llama/Llama-3.1-8B", "gpu": "h100-sxm",
    "engine": {"args": {"enforce-eager": True, "max-model-len": 2048}},
    "workload": {"dataset": {"type": "random", "inputLen": 128, "outputLen": 16, "rangeRatio": 0.2},
                 "arrival": {"process": "poisson", "requestRate": 4}, "numPrompts": 4, "seed": 1},
}


def sweep_doc(grid: dict | None = None, name: str = "tiny") -> dict:
    return {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulationSweep", "metadata": {"name": name},
            "spec": {"base": copy.deepcopy(BASE), "grid": grid or {"engine.args.max-num-seqs": [8, 16], "tensorParallelSize": [1, 2]},
                     "slo": {"ttftMs": {"p99": 100}}, "prices": {"h100-sxm": 2.0}}}


def fake_report(spec: dict, *, failed: int = 0) -> dict:
    """A report like `revati run`'s: bigger batches are faster here, TP 2 faster still."""
    seqs = spec["engine"]["args"]["max-num-seqs"]
    tp = spec.get("tensorParallelSize", 1)
    n = spec["workload"]["numPrompts"]
    ttft = 1600.0 / seqs / tp
    return {"completed": n - failed, "failed": failed, "p50_ttft_ms": ttft / 2, "p99_ttft_ms": ttft,
            "p50_tpot_ms": 5.0, "p99_tpot_ms": 10.0 / tp, "output_throughput": 50.0 * seqs * tp,
            "request_throughput": 1.0, "emulation": {"virtual_s": 10.0, "wall_s": 20.0,
                                                     "load_generator": {"num_prompts": n}}}


class FakeRunner:
    """runner(spec_path, out, log_path, stop): writes report.json (or not) and returns an exit code.

    fail: child name -> "crash" (exit 1, no report) or "requests" (exit 1, report with failed requests).
    """

    def __init__(self, fail: dict[str, str] | None = None, hold: float = 0.0, interrupt_on: str | None = None):
        self.fail = fail or {}
        self.hold = hold
        self.interrupt_on = interrupt_on
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def __call__(self, spec_path: Path, out: Path, log_path: Path, stop: threading.Event) -> int:
        body = yaml.safe_load(spec_path.read_text())
        name = body["metadata"]["name"]
        assert spec_path.parent == out and log_path.parent == out
        with self.lock:
            self.calls.append(name)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            log_path.write_text(f"fake revati run {name}\n")
            (out / "server.replica0.log").write_text("started\n")
            if name == self.interrupt_on:
                _thread.interrupt_main()  # Ctrl-C while this child runs
                assert stop.wait(10), "the sweep did not stop its running children"
                return 130
            deadline = time.monotonic() + self.hold
            while time.monotonic() < deadline and not stop.is_set():
                time.sleep(0.01)
            mode = self.fail.get(name)
            if mode == "crash":
                log_path.write_text("revati run: the server exited (1)\n")
                return 1
            rep = fake_report(body["spec"], failed=2 if mode == "requests" else 0)
            (out / "report.json").write_text(json.dumps(rep))
            return 0 if mode is None else 1
        finally:
            with self.lock:
                self.running -= 1


def _sweep(**kw) -> EmulationSweep:
    return EmulationSweep.model_validate(sweep_doc(**kw))


def _state(out: Path) -> dict:
    return json.loads((out / STATE_NAME).read_text())


def test_all_children_run_and_are_ranked_by_the_operators_rank(tmp_path):
    sw = _sweep()
    runner = FakeRunner()
    res = run_sweep(sw, tmp_path / "out", runner=runner)
    assert sorted(runner.calls) == [f"tiny-{i}" for i in range(4)]
    assert res.exit_code == 0 and not res.interrupted
    # The same rank() over the same metrics the operator would have in its children's status.
    rows = [{"name": f"tiny-{i}", "params": p, "phase": "Succeeded",
             "metrics": status_from_report(fake_report(yaml.safe_load(
                 (tmp_path / "out" / f"tiny-{i}" / CHILD_SPEC_NAME).read_text())["spec"]))["metrics"]}
            for i, p in enumerate([{"engine.args.max-num-seqs": 8, "tensorParallelSize": 1},
                                   {"engine.args.max-num-seqs": 8, "tensorParallelSize": 2},
                                   {"engine.args.max-num-seqs": 16, "tensorParallelSize": 1},
                                   {"engine.args.max-num-seqs": 16, "tensorParallelSize": 2}])]
    expected = rank(sw.spec, rows)
    written = json.loads((tmp_path / "out" / RESULT_NAME).read_text())
    for key in ("cheapest", "pareto", "ranking", "progress"):
        assert written[key] == expected[key], key
    # TTFT p99: 200, 100, 100, 50 ms; SLO p99 100 ms. Cheapest meeting it: 1 GPU, max-num-seqs 16.
    assert written["cheapest"]["name"] == "tiny-2"
    assert written["ranking"][:2] == ["tiny-2", "tiny-1"] and written["ranking"][-1] == "tiny-0"
    assert written["phase"] == "Succeeded" and written["progress"] == "4/4"
    assert all(Path(c["dir"]) == tmp_path / "out" / c["name"] for c in written["children"])
    state = _state(tmp_path / "out")
    assert state["done"] == [f"tiny-{i}" for i in range(4)] and state["failed"] == []
    assert (tmp_path / "out" / "sweep.yaml").exists()
    if plots.available():
        assert PLOT_NAME in res.files and (tmp_path / "out" / PLOT_NAME).stat().st_size > 0


def test_failed_children_are_ranked_failed_never_cheapest(tmp_path):
    # tiny-0 and tiny-2 are the 1-GPU (cheapest) children: one crashes, one has failed requests.
    runner = FakeRunner(fail={"tiny-0": "crash", "tiny-2": "requests"})
    res = run_sweep(_sweep(), tmp_path / "out", runner=runner)
    assert res.exit_code == 1
    r = res.result
    by = {c["name"]: c for c in r["children"]}
    assert by["tiny-0"]["phase"] == "Failed" and by["tiny-2"]["phase"] == "Failed"
    assert not by["tiny-0"]["meetsSlo"] and not by["tiny-2"]["meetsSlo"]
    assert by["tiny-0"]["reason"].startswith("revati run exited 1: revati run: the server exited (1) (see ")
    assert "2 request(s) failed" in by["tiny-2"]["reason"]
    assert "metrics" in by["tiny-2"]  # its report is kept, but it is not ranked
    assert r["ranking"] == ["tiny-1", "tiny-3"]  # same cost and TPOT: in expansion order
    assert r["cheapest"]["name"] == "tiny-1"  # 2 GPUs: the cheaper children failed
    assert r["pareto"] == ["tiny-3"]
    assert _state(tmp_path / "out")["failed"] == ["tiny-0", "tiny-2"]
    rendered = _render(table(r, ["engine.args.max-num-seqs", "tensorParallelSize"]))
    assert "Failed" in rendered and "tiny-3" in rendered


def _render(t) -> str:
    from rich.console import Console

    c = Console(width=200, record=True, file=open("/dev/null", "w"))
    c.print(t)
    return c.export_text()


def test_interrupted_sweep_resumes_without_rerunning_finished_children(tmp_path):
    out = tmp_path / "out"
    first = FakeRunner(interrupt_on="tiny-2")
    res = run_sweep(_sweep(), out, runner=first)
    assert res.interrupted and res.exit_code == 130
    assert first.calls == ["tiny-0", "tiny-1", "tiny-2"]  # in turn; tiny-3 never started
    state = _state(out)
    assert state["done"] == ["tiny-0", "tiny-1"] and state["interrupted"] == ["tiny-2"]
    assert res.result["phase"] == "Incomplete" and res.result["progress"] == "2/4"
    assert res.result["ranking"] == ["tiny-1", "tiny-0"]
    rows = {c["name"]: c for c in res.result["children"]}
    assert rows["tiny-2"].get("interrupted") and "phase" not in rows["tiny-2"] and "phase" not in rows["tiny-3"]
    rendered = _render(table(res.result, ["engine.args.max-num-seqs", "tensorParallelSize"]))
    assert "interrupted" in rendered and "not run" in rendered
    stale = out / "tiny-2" / "server.replica0.log"
    assert stale.exists()

    second = FakeRunner()
    res = run_sweep(_sweep(), out, runner=second)
    assert second.calls == ["tiny-2", "tiny-3"]
    assert res.exit_code == 0 and res.result["progress"] == "4/4"
    assert _state(out)["done"] == [f"tiny-{i}" for i in range(4)]

    third = FakeRunner()
    run_sweep(_sweep(), out, runner=third)
    assert third.calls == []


def test_half_finished_child_is_rerun_from_scratch_and_a_complete_report_is_kept(tmp_path):
    out = tmp_path / "out"
    run_sweep(_sweep(), out, runner=FakeRunner())
    # As after a kill -9: the state says Running for two children; tiny-1 had written its
    # complete report, tiny-3 had not (a truncated report.json).
    state = _state(out)
    for name in ("tiny-1", "tiny-3"):
        state["children"][name]["phase"] = "Running"
    (out / STATE_NAME).write_text(json.dumps(state))
    (out / "tiny-3" / "report.json").write_text('{"completed": 4, "emul')
    (out / "tiny-3" / "leftover.txt").write_text("x")
    runner = FakeRunner()
    res = run_sweep(_sweep(), out, runner=runner)
    assert runner.calls == ["tiny-3"]
    assert not (out / "tiny-3" / "leftover.txt").exists()
    assert read_report(out / "tiny-3") is not None
    assert _state(out)["running"] == [] and res.result["progress"] == "4/4"


def test_failed_children_are_not_rerun_unless_asked(tmp_path):
    out = tmp_path / "out"
    run_sweep(_sweep(), out, runner=FakeRunner(fail={"tiny-1": "crash"}))
    again = FakeRunner()
    res = run_sweep(_sweep(), out, runner=again)
    assert again.calls == [] and res.exit_code == 1
    assert {c["name"]: c.get("phase") for c in res.result["children"]}["tiny-1"] == "Failed"
    assert "exited 1" in {c["name"]: c for c in res.result["children"]}["tiny-1"]["reason"]
    retry = FakeRunner()
    res = run_sweep(_sweep(), out, runner=retry, retry_failed=True)
    assert retry.calls == ["tiny-1"] and res.exit_code == 0


def test_a_child_with_failed_requests_keeps_its_report_and_reruns_only_when_asked(tmp_path):
    out = tmp_path / "out"
    run_sweep(_sweep(), out, runner=FakeRunner(fail={"tiny-2": "requests"}))
    state = _state(out)
    del state["children"]["tiny-2"]  # as if the sweep was killed before it recorded the child
    (out / STATE_NAME).write_text(json.dumps(state))
    again = FakeRunner()
    res = run_sweep(_sweep(), out, runner=again)
    assert again.calls == []
    row = {c["name"]: c for c in res.result["children"]}["tiny-2"]
    assert row["phase"] == "Failed" and row["reason"] == "2 request(s) failed, 2 completed"
    assert _state(out)["failed"] == ["tiny-2"]
    retry = FakeRunner()
    res = run_sweep(_sweep(), out, runner=retry, retry_failed=True)
    assert retry.calls == ["tiny-2"] and res.exit_code == 0


def test_a_child_whose_spec_changed_is_rerun(tmp_path):
    out = tmp_path / "out"
    run_sweep(_sweep(), out, runner=FakeRunner())
    runner = FakeRunner()
    # The second max-num-seqs value changes: children 2 and 3 get other specs.
    res = run_sweep(_sweep(grid={"engine.args.max-num-seqs": [8, 32], "tensorParallelSize": [1, 2]}), out,
                    runner=runner)
    assert runner.calls == ["tiny-2", "tiny-3"]
    assert res.result["children"][2]["metrics"]["ttftMs"]["p99"] == 50.0  # 1600 / 32


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_parallel_runs_that_many_children_at_once(tmp_path, parallel):
    runner = FakeRunner(hold=0.3)
    res = run_sweep(_sweep(), tmp_path / "out", runner=runner, parallel=parallel)
    assert runner.max_running == parallel
    assert sorted(runner.calls) == [f"tiny-{i}" for i in range(4)] and res.exit_code == 0


def test_a_runner_that_raises_fails_its_child_only(tmp_path):
    ok = FakeRunner()

    def runner(spec_path, out, log_path, stop):
        if out.name == "tiny-0":
            raise OSError("no such interpreter")
        return ok(spec_path, out, log_path, stop)

    res = run_sweep(_sweep(), tmp_path / "out", runner=runner)
    by = {c["name"]: c for c in res.result["children"]}
    assert by["tiny-0"]["phase"] == "Failed" and "no such interpreter" in by["tiny-0"]["reason"]
    assert [by[f"tiny-{i}"]["phase"] for i in (1, 2, 3)] == ["Succeeded"] * 3


def test_child_specs_are_the_expanded_children_with_absolute_trace_paths(tmp_path):
    doc = sweep_doc(grid={"tensorParallelSize": [1, 2]})
    doc["spec"]["base"]["workload"] = {"dataset": {"type": "trace", "path": "traces/t.jsonl"}, "numPrompts": 4}
    sw = EmulationSweep.model_validate(doc)
    run_sweep(sw, tmp_path / "out", base_dir=tmp_path / "here", runner=lambda *a: 1)
    body = yaml.safe_load((tmp_path / "out" / "tiny-1" / CHILD_SPEC_NAME).read_text())
    assert body["kind"] == "EmulatedDeployment" and body["metadata"]["name"] == "tiny-1"
    assert body["spec"]["tensorParallelSize"] == 2 and body["spec"]["slo"] == {"ttftMs": {"p99": 100.0}}
    assert body["spec"]["workload"]["dataset"]["path"] == str(tmp_path / "here" / "traces" / "t.jsonl")
    absolute = {"workload": {"dataset": {"type": "trace", "path": "/abs/t.jsonl"}}}
    assert absolute_paths(absolute, tmp_path)["workload"]["dataset"]["path"] == "/abs/t.jsonl"


def test_bad_sweep_files_name_the_field_and_touch_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    doc = sweep_doc()
    doc["spec"]["grid"]["tensorParalelSize"] = [1]
    doc["spec"]["prices"]["h100-sxm"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SweepFileError) as e:
        load_sweep(path)
    text = str(e.value)
    assert "spec.prices.h100-sxm: Input should be greater than 0" in text
    assert "grid path 'tensorParalelSize'" in text
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    assert "invalid sweep" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    run_spec = tmp_path / "run.yaml"
    run_spec.write_text(yaml.safe_dump({"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment",
                                        "metadata": {"name": "x"}, "spec": BASE}))
    with pytest.raises(SweepFileError, match="which `revati run` runs"):
        load_sweep(run_spec)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SweepFileError, match="must be a mapping"):
        load_sweep(tmp_path / "list.yaml")
    with pytest.raises(SweepFileError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")


def test_cli_runs_the_sweep_prints_the_table_and_exits_by_outcome(tmp_path, monkeypatch, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_doc()))
    runner = FakeRunner(fail={"tiny-3": "crash"})
    monkeypatch.setattr(sweep_local, "run_child", runner)
    rc = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--parallel", "2"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "cheapest meeting the SLO: tiny-2" in printed
    assert "tiny-3: revati run exited 1: revati run: the server exited (1)" in printed
    assert f"wrote {RESULT_NAME}" in printed
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--parallel", "0"]) == 2


def test_run_child_runs_revati_run_and_logs_its_output(tmp_path):
    # An invalid child spec: `revati run` exits 2 at once, naming the field.
    spec = tmp_path / "child.yaml"
    spec.write_text(yaml.safe_dump({"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment",
                                    "metadata": {"name": "x"}, "spec": {**BASE, "tensorParallelSize": 0}}))
    rc = sweep_local.run_child(spec, tmp_path / "out", tmp_path / CHILD_LOG_NAME, threading.Event())
    assert rc == 2
    assert "tensorParallelSize" in (tmp_path / CHILD_LOG_NAME).read_text()


@pytest.mark.parametrize("path", ["examples/sweep-llama-8b-batch.yaml", "charts/revati/examples/emulationsweep.yaml"])
def test_shipped_sweep_files_load(path):
    repo = Path(__file__).resolve().parents[2]
    sw = load_sweep(repo / path)
    assert len(expand(sw)) == math.prod(len(v) for v in sw.spec.grid.values()) >= 4


def test_cost_latency_front():
    pts = [("a", 1.0, 300.0), ("b", 2.0, 100.0), ("c", 2.0, 150.0), ("d", 4.0, 100.0), ("e", 4.0, 50.0)]
    assert plots.cost_latency_front(pts) == ["a", "b", "e"]
    assert plots.cost_latency_front([]) == []


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_real_children_run_in_parallel_and_are_ranked(tmp_path):
    """Two tiny real runs (`revati run` each: vLLM under the emulator, the real bench) at once."""
    doc = sweep_doc(grid={"engine.args.max-num-seqs": [4, 8]}, name="e2e")
    doc["spec"]["slo"] = {"ttftMs": {"p99": 60000}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "sweep", str(path), "--out", str(out), "--parallel", "2"],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads((out / RESULT_NAME).read_text())
    assert result["progress"] == "2/2" and sorted(result["ranking"]) == ["e2e-0", "e2e-1"]
    for c in result["children"]:
        rep = read_report(out / c["name"])
        assert rep is not None and rep["completed"] == 4 and rep["emulation"]["timewarp"] is True
        assert c["metrics"] == status_from_report(rep)["metrics"] and c["meetsSlo"]
        assert c["metrics"]["ttftMs"]["p99"] > 0
    assert result["cheapest"]["name"] in ("e2e-0", "e2e-1")
    assert "cheapest meeting the SLO" in p.stdout
    # Run again: nothing reruns.
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "revati.cli", "sweep", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "2 of 2 children finished in an earlier run" in p.stderr
    assert time.monotonic() - t0 < 60


def test_child_status_follows_the_child_run(tmp_path):
    assert sweep_local._child_status(tmp_path) == "starting the server"
    (tmp_path / "bench.log").write_text("Namespace(...)\nwarmup 1/1 [00:01]\n")
    assert sweep_local._child_status(tmp_path) == "warming up the load generator"
    with open(tmp_path / "bench.log", "a") as f:
        f.write("Starting main benchmark run...\n 3/8 [00:02<00:03]\r 5/8 [00:03<00:02]")
    assert sweep_local._child_status(tmp_path) == "requests 5/8"


# -- one dilation calibration for the sweep --------------------------------------------------


@pytest.fixture
def calibrations(monkeypatch):
    """auto_dilation replaced by a counter: each call reads a different number, as a loaded host does."""
    from revati.timekeeper import calibrate

    calls: list[float] = []

    def auto_dilation():
        calls.append(1.25 + 0.1 * len(calls))
        return calls[-1], f"dilation auto = {calls[-1]:.3f}: the reference workload (test)"

    monkeypatch.setattr(calibrate, "auto_dilation", auto_dilation)
    monkeypatch.delenv("REVATI_DILATION_AUTO", raising=False)
    return calls


def _seeing_env(runner: FakeRunner, seen: list) -> sweep_local.Runner:
    def run(spec_path, out, log_path, stop):
        seen.append(os.environ.get("REVATI_DILATION_AUTO"))
        return runner(spec_path, out, log_path, stop)
    return run


def test_the_children_share_one_calibration_which_a_resumed_sweep_reuses(tmp_path, calibrations):
    out, seen = tmp_path / "out", []
    run_sweep(_sweep(), out, runner=_seeing_env(FakeRunner(fail={"tiny-1": "crash"}), seen))
    assert calibrations == [1.25]  # one calibration for four children
    shared = [json.loads(s) for s in seen]
    assert len(shared) == 4 and all(s == shared[0] for s in shared) and shared[0]["dilation"] == 1.25
    assert "calibrated once at the sweep's start" in shared[0]["how"]
    assert json.loads((out / sweep_local.CALIBRATION_NAME).read_text())["dilation"] == 1.25
    assert "REVATI_DILATION_AUTO" not in os.environ  # only the children had it
    # the resumed sweep reruns the failed child with the same number, not a new reading
    seen.clear()
    run_sweep(_sweep(), out, runner=_seeing_env(FakeRunner(), seen), retry_failed=True)
    assert calibrations == [1.25] and len(seen) == 1 and json.loads(seen[0])["dilation"] == 1.25


def test_children_that_pin_their_dilation_need_no_calibration(tmp_path, calibrations):
    doc = sweep_doc()
    doc["spec"]["base"]["emulation"] = {"dilation": 2.0}
    seen: list = []
    run_sweep(EmulationSweep.model_validate(doc), tmp_path / "out", runner=_seeing_env(FakeRunner(), seen))
    assert calibrations == [] and seen == [None] * 4
    assert not (tmp_path / "out" / sweep_local.CALIBRATION_NAME).exists()


def test_a_run_takes_the_shared_number_for_auto_and_keeps_a_pinned_one(monkeypatch, calibrations):
    from revati.run.orchestrator import resolve_dilation
    from revati.spec.load import spec_from_dict

    def spec(dilation=None):
        d = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "x"},
             "spec": copy.deepcopy(BASE)}
        if dilation is not None:
            d["spec"]["emulation"] = {"dilation": dilation}
        return spec_from_dict(d)

    monkeypatch.setenv("REVATI_DILATION_AUTO", json.dumps({"dilation": 1.4, "how": "the sweep's"}))
    assert resolve_dilation(spec()) == (1.4, "the sweep's")
    assert resolve_dilation(spec(3.0)) == (3.0, "dilation 3, given in the spec")
    monkeypatch.setenv("REVATI_DILATION_AUTO", "1.4")
    with pytest.raises(ValueError, match="REVATI_DILATION_AUTO must be"):
        resolve_dilation(spec())
    monkeypatch.delenv("REVATI_DILATION_AUTO")
    assert resolve_dilation(spec()) == (1.25, "dilation auto = 1.250: the reference workload (test)")


def test_a_sweep_over_engines_gives_each_engine_its_own_flags_and_default_version(tmp_path):
    """examples/sweep-engines.yaml: the grid varies the whole engine block (issue 14)."""
    from revati.spec.load import spec_from_dict

    sw = load_sweep(Path(__file__).resolve().parents[2] / "examples" / "sweep-engines.yaml")
    children = expand(sw)
    got = [(spec_from_dict(c.body).spec.engine.name, spec_from_dict(c.body).spec.engine.version,
            sorted(c.spec["engine"]["args"]), c.spec["tensorParallelSize"]) for c in children]
    assert got == [("vllm", "0.33.0", ["max-num-batched-tokens", "max-num-seqs"], 1),
                   ("vllm", "0.33.0", ["max-num-batched-tokens", "max-num-seqs"], 2),
                   ("sglang", "0.5.23", ["chunked-prefill-size", "max-running-requests"], 1),
                   ("sglang", "0.5.23", ["chunked-prefill-size", "max-running-requests"], 2)]

    def report_of(spec: dict) -> dict:  # FakeRunner's report wants max-num-seqs
        seqs = spec["engine"]["args"].get("max-num-seqs") or spec["engine"]["args"]["max-running-requests"]
        return fake_report({**spec, "engine": {"args": {"max-num-seqs": seqs}}})

    class EngineRunner(FakeRunner):
        def __call__(self, spec_path, out, log_path, stop):
            body = yaml.safe_load(spec_path.read_text())
            log_path.write_text("fake\n")
            (out / "report.json").write_text(json.dumps(report_of(body["spec"])))
            self.calls.append(body["spec"]["engine"]["name"])
            return 0

    runner = EngineRunner()
    res = run_sweep(sw, tmp_path / "out", runner=runner)
    assert res.exit_code == 0 and sorted(runner.calls) == ["sglang", "sglang", "vllm", "vllm"]
    rendered = _render(table(res.result, sorted(sw.spec.grid)))
    assert "sglang" in rendered and "vllm" in rendered and "max-running-requests" not in rendered
