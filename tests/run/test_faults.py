"""A process of the deployment that dies or hangs ends `revati run` as a failed run
(revati/run/faults.py): the watchdog on plain processes, the failed report, then each kind of
process of a fake deployment (tests/run/fake_deployment.py: the real `revati run`, Timekeeper,
sidecar and report around a cheap stand-in for vLLM's process tree) killed or stopped at a
seeded random point of its load. About 10 s per fake run on 2 cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from revati.run import faults

sys.path.insert(0, str(Path(__file__).parent))
import fake_deployment  # noqa: E402


def _until(pred, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def _sleeper(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time, sys; [print(l, flush=True) for l in sys.argv[1:]]; "
                             "time.sleep(60)", *extra], stdout=subprocess.DEVNULL, process_group=0)


# ---------------------------------------------------------------------- the watchdog alone

def test_a_killed_child_is_a_fault_with_its_signal_and_the_rest_are_killed(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("line one\nthe last line\n")
    victim, other = _sleeper(), _sleeper()
    seen = []
    w = faults.Watchdog(clock=lambda: 12.5, waits=lambda: ["pid 1 (x): sleeping"], on_fault=seen.append).start()
    try:
        w.add(victim.pid, "engine", log_path=log)
        w.add(other.pid, "sidecar")
        time.sleep(0.3)
        assert w.fault is None
        victim.send_signal(signal.SIGKILL)
        f = _until(lambda: w.fault)
        assert f is not None and f.kind == "engine" and f.condition == "EngineCrashed"
        assert f.status == "killed by SIGKILL (signal 9)" and f.virtual_s == 12.5 and not f.hung
        assert "the last line" in f.log_tail and f.waiting == ["pid 1 (x): sleeping"]
        assert other.wait(5) == -signal.SIGKILL  # the rest is stopped at once
        assert seen == [f]
        assert victim.wait(5) == -signal.SIGKILL  # (the status was left to its owner to reap)
    finally:
        w.stop()
        for p in (victim, other):
            p.kill()
            p.wait()


def test_exit_status_zero_is_a_fault_for_a_server_not_for_the_load_generator():
    w = faults.Watchdog(clock=lambda: None).start()
    try:
        bench = subprocess.Popen([sys.executable, "-c", "pass"], process_group=0)
        w.add(bench.pid, "loadgen", exits_ok=True)
        time.sleep(0.8)
        assert w.fault is None
        server = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], process_group=0)
        w.add(server.pid, "api")
        f = _until(lambda: w.fault)
        assert f.kind == "api" and f.status == "exited with status 3" and f.condition == "ApiServerCrashed"
    finally:
        w.stop()
        bench.wait()
        server.wait()


def test_a_stopped_process_is_hung_a_busy_one_is_not():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], process_group=0)
    stopped = _sleeper()
    w = faults.Watchdog(clock=lambda: 1.0, hang_s=0.6).start()
    try:
        w.add(busy.pid, "worker")
        w.add(stopped.pid, "engine")
        time.sleep(1.5)
        assert w.fault is None  # running flat out is slow, not hung
        stopped.send_signal(signal.SIGSTOP)
        f = _until(lambda: w.fault)
        assert f.pid == stopped.pid and f.hung and f.condition == "EngineHung"
        assert f.status.startswith("hung: stopped (state T") and "not slow" in f.message()
        assert busy.wait(5) == -signal.SIGKILL and stopped.wait(5) == -signal.SIGKILL  # SIGKILL ends a stopped one
    finally:
        w.stop()
        for p in (busy, stopped):
            p.kill()
            p.wait()


def test_a_descendant_named_by_the_engine_is_found_and_its_death_told(tmp_path):
    from revati import engines

    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import setproctitle, time; "
            "setproctitle.setproctitle(\"VLLM::EngineCore_DP0\"); time.sleep(60)']); time.sleep(60)")
    server = subprocess.Popen([sys.executable, "-c", code], process_group=0)
    w = faults.Watchdog(clock=lambda: None, discover_s=0.2).start()
    try:
        w.add(server.pid, "api", tree=engines.get())
        import psutil

        core = _until(lambda: [p for p in psutil.Process(server.pid).children()
                               if fake_deployment._cmdline(p)[:1] == ["VLLM::EngineCore_DP0"]])
        time.sleep(0.6)  # discovered
        core[0].send_signal(signal.SIGKILL)
        f = _until(lambda: w.fault)
        assert f.kind == "engine" and f.pid == core[0].pid, f
        assert "VLLM::EngineCore_DP0" in f.process
        # not our child: its status is read from its zombie (its parent here never reaps it)
        assert f.status == "killed by SIGKILL (signal 9)"
    finally:
        w.stop()
        server.kill()
        server.wait()
        w.reap()


def test_a_tree_added_during_a_turn_is_searched_at_once_not_a_discovery_later(tmp_path):
    """add() of a tree asks for a discovery at once; the turn in progress had taken its list of
    processes before the add. It must search the new tree, not spend the discovery on its old list
    (the engine core then went unwatched for discover_s, and a kill in the load's first second
    was named as the API server's exit that followed it)."""
    from revati import engines

    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import setproctitle, time; "
            "setproctitle.setproctitle(\"VLLM::EngineCore_DP0\"); time.sleep(60)']); time.sleep(60)")
    server = subprocess.Popen([sys.executable, "-c", code], process_group=0)
    import psutil

    _until(lambda: [p for p in psutil.Process(server.pid).children()
                    if fake_deployment._cmdline(p)[:1] == ["VLLM::EngineCore_DP0"]])
    # a long poll and no discovery for a minute, but the one add() asks for
    w = faults.Watchdog(clock=lambda: None, poll_s=2.0, discover_s=60.0).start()
    try:
        time.sleep(0.3)  # the first turn has discovered (nothing) and waits in its poll
        w.add(server.pid, "api", tree=engines.get())
        assert _until(lambda: [x for x in w._watched if x.kind == "engine"], timeout_s=1.5), \
            [(x.kind, x.pid) for x in w._watched]
    finally:
        w.stop()
        server.kill()
        server.wait()
        w.reap()


def test_the_timekeepers_loop_dying_or_stalling_is_a_fault():
    class Tk:
        stopped = False
        crashed = None
        loop_turned = time.monotonic()

    tk = Tk()
    w = faults.Watchdog(clock=lambda: None, hang_s=0.5)
    w.watch_timekeeper(tk)
    w.start()
    try:
        for _ in range(10):
            tk.loop_turned = time.monotonic()
            time.sleep(0.1)
        assert w.fault is None
        tk.crashed = "Traceback ...\nKeyError: 'x'\n"
        f = _until(lambda: w.fault)
        assert f.condition == "TimekeeperCrashed" and f.status == "died: KeyError: 'x'"
    finally:
        w.stop()
    tk2 = Tk()
    tk2.loop_turned = time.monotonic()
    release = threading.Event()

    def a_loop_that_blocks_in_its_turn():
        release.wait(30)

    tk2._thread = threading.Thread(target=a_loop_that_blocks_in_its_turn, daemon=True)
    tk2._thread.start()
    w2 = faults.Watchdog(clock=lambda: None, hang_s=0.5)
    w2.watch_timekeeper(tk2)
    w2.start()
    try:
        f = _until(lambda: w2.fault)
        assert f.condition == "TimekeeperHung" and f.hung
        # the report says where the loop thread is stuck
        assert "a_loop_that_blocks_in_its_turn" in f.log_tail and "release.wait" in f.log_tail, f.log_tail
    finally:
        w2.stop()
        release.set()


def test_only_the_first_fault_counts_and_stop_ends_watching():
    a, b = _sleeper(), _sleeper()
    w = faults.Watchdog(clock=lambda: None).start()
    w.add(a.pid, "worker")
    w.add(b.pid, "engine")
    w.deadlock("revati: time warp: deadlock: every thread ...\n  pid 1 (x) thread 1: futex")
    f = w.fault
    assert f.kind == "deadlock" and f.condition == "EmulatedDeadlock" and f.waiting == ["  pid 1 (x) thread 1: futex"]
    assert _until(lambda: a.poll() is not None and b.poll() is not None)
    assert w.fault is f  # the deaths it caused are not new faults
    w.stop()
    c = _sleeper()
    w2 = faults.Watchdog(clock=lambda: None).start()
    w2.add(c.pid, "api")
    w2.stop()
    c.kill()
    c.wait()
    time.sleep(0.3)
    assert w2.fault is None  # an exit after stop() is the runner's own teardown


def test_cut_rows_and_the_failed_report_count_only_requests_finished_before_the_fault():
    bench = {"start_times": [100.0, 100.5, 101.0, 101.2], "latencies": [0.4, 0.4, 0.9, 0.0],
             "ttfts": [0.1, 0.1, 0.2, 0.0], "itls": [[0.1] * 3, [0.1] * 3, [0.2] * 3, []],
             "output_lens": [4, 4, 4, 0], "input_lens": [16] * 4, "errors": ["", "", "", "boom"],
             "request_rate": 20.0, "completed": 3, "failed": 1, "mean_ttft_ms": 999.0}
    f = faults.Fault("engine", "the engine core (pid 5)", 5, "killed by SIGKILL (signal 9)", False, 101.5, 0.0)
    rows = faults.cut_rows(bench, 101.5)
    assert [r["success"] for r in rows] == [True, True, False, False]
    assert "after the fault" in rows[2]["error"] and rows[3]["error"] == "boom"
    rep = faults.failed_report(bench, rows, 6, {"notes": []}, f)
    assert rep["outcome"] == "failed" and rep["failure"]["condition"] == "EngineCrashed"
    assert rep["completed"] == 2 and rep["failed"] == 4 and rep["duration"] == pytest.approx(1.5)
    assert rep["mean_ttft_ms"] == pytest.approx(100.0)  # recomputed, not bench's
    assert rep["request_throughput"] == pytest.approx(2 / 1.5)
    assert "2 of 6" in rep["metrics_scope"] and rep["request_rate"] == 20.0
    none = faults.failed_report(None, [], 6, {"notes": []}, f)
    assert none["completed"] == 0 and none["metrics_scope"].startswith("none")


def test_a_sweep_ranks_a_failed_outcome_as_failed():
    from revati.run.sweep_local import _requests_failed, report_phase

    rep = {"outcome": "failed", "completed": 10, "failed": 0, "metrics_scope": "only the 10 of 10",
           "failure": {"message": "EngineCrashed: the engine core (pid 1) killed by SIGKILL"},
           "emulation": {"load_generator": {"num_prompts": 10}}}
    assert report_phase(rep) == "Failed"
    assert _requests_failed(rep).startswith("EngineCrashed")
    assert report_phase({**rep, "outcome": "completed"}) == "Succeeded"


# ---------------------------------------------------------------------- a fake deployment

# (kind, how, the condition, what the status says)
CASES = [
    ("api", "KILL", "ApiServerCrashed", "killed by SIGKILL"),
    ("engine", "KILL", "EngineCrashed", "killed by SIGKILL"),
    ("worker", "KILL", "WorkerCrashed", "killed by SIGKILL"),
    ("loadgen", "KILL", "LoadgenCrashed", "killed by SIGKILL"),
    ("sidecar", "KILL", "SidecarCrashed", "killed by SIGKILL"),
    ("router", "KILL", "RouterCrashed", "killed by SIGKILL"),
    ("router", "STOP", "RouterHung", "hung: stopped (state T"),
    ("timekeeper", "crash", "TimekeeperCrashed", "died: RuntimeError: injected Timekeeper fault"),
    ("engine", "STOP", "EngineHung", "hung: stopped (state T"),
    ("loadgen", "STOP", "LoadgenHung", "hung: stopped (state T"),
    ("timekeeper", "hang", "TimekeeperHung", "hung: its loop has not turned"),
]


@pytest.mark.parametrize("kind,how,cond,status", CASES, ids=[f"{k}-{h}" for k, h, _, _ in CASES])
def test_a_fault_of_each_kind_ends_the_run_as_failed(tmp_path, kind, how, cond, status):
    o = fake_deployment.inject(kind, how, seed=15, workdir=str(tmp_path))
    assert o.injected_at_s is not None, f"the run ended before the fault:\n{o.output[-3000:]}"
    assert o.rc == faults.FAULT_EXIT_CODE, o.output[-3000:]
    assert not o.survivors, o.survivors
    assert o.fault_to_exit_s < 10.0
    line = next(x for x in o.output.splitlines() if x.startswith("revati run: FAILED:"))
    assert cond in line and status in line and "into the load)" in line, line
    assert "What the other actors were waiting on:" in o.output
    if kind != "timekeeper":
        assert "Last lines of " in o.output
    rep = o.report
    assert rep["outcome"] == "failed" and rep["failure"]["condition"] == cond
    assert rep["failure"]["kind"] == kind and status in rep["failure"]["status"]
    assert rep["failure"]["waiting"]
    rows = (Path(o.out) / "requests.jsonl").read_text().splitlines()
    assert rep["completed"] + rep["failed"] == 400
    if kind in ("loadgen", "timekeeper"):  # no results written: no metrics, said so
        assert rep["completed"] == 0 and rep["metrics_scope"].startswith("none") and rows == []
    else:
        assert len(rows) == 400 and 0 < rep["completed"] < 400, rep["metrics_scope"]
        assert f"only the {rep['completed']} of 400" in rep["metrics_scope"]
        assert rep["duration"] > 0 and rep["mean_ttft_ms"] > 0


def test_an_engine_that_dies_during_start_up_is_named_not_the_sidecar_stopped_after_it(tmp_path):
    # an impossible spec (the weights do not fit): the server exits while starting, and the
    # teardown then stops the sidecar; the run must name the server and show its reason
    import yaml

    spec = json.loads(json.dumps(fake_deployment.SPEC))
    spec["spec"]["emulation"]["predictor"] = "sidecar"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ, REVATI_FAKE_START_OOM="1")
    r = subprocess.run([sys.executable, fake_deployment.HERE, "revati", "run", str(tmp_path / "spec.yaml"),
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == faults.FAULT_EXIT_CODE, out[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("revati run: FAILED:"))
    assert "ApiServerCrashed" in line and "Sidecar" not in line, line
    assert "Its reason, from its log: torch.OutOfMemoryError: CUDA out of memory" in out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["outcome"] == "failed" and rep["failure"]["kind"] == "api"
    assert rep["failure"]["reason"].startswith("torch.OutOfMemoryError")


def test_the_reason_is_the_root_cause_not_its_wrappers(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(
        "(EngineCore pid=7) ERROR 12-02 21:07:00 [core.py:1510]     raise ValueError(\n"
        "(EngineCore pid=7) ERROR 12-02 21:07:00 [core.py:1510] ValueError: To serve at least one "
        "request with the model's max seq len (131072), (16.0 GiB KV cache is needed\n"
        "Traceback (most recent call last):\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s)\n")
    assert faults.log_reason(log).startswith("ValueError: To serve at least one request")
    log.write_text("INFO all good\n")
    assert faults.log_reason(log) == ""


# ---------------------------------------------------------------------- the real vLLM

REAL = {
    "apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "crash"},
    "spec": {
        "model": "meta-llama/Llama-3.1-8B", "gpu": "h100-sxm",
        "engine": {"args": {"enforce-eager": True, "max-model-len": 2048, "max-num-seqs": 16}},
        "workload": {"dataset": {"type": "random", "inputLen": 128, "outputLen": 64, "rangeRatio": 0.2},
                     "arrival": {"process": "poisson", "requestRate": 4}, "numPrompts": 200, "seed": 1},
    },
}


@pytest.mark.slow
def test_the_real_engine_core_killed_mid_load_ends_the_run_as_failed(tmp_path):
    """The issue's case: vLLM's engine core SIGKILLed during the load (1-2 min of start-up here)."""
    o = fake_deployment.inject("engine", "KILL", seed=15, workdir=str(tmp_path), real_spec=REAL,
                               delay_s=(1.0, 4.0), timeout_s=900)
    assert o.injected_at_s is not None, o.output[-3000:]
    assert o.rc == faults.FAULT_EXIT_CODE, o.output[-3000:]
    assert not o.survivors, o.survivors
    assert o.fault_to_exit_s < 10.0
    line = next(x for x in o.output.splitlines() if x.startswith("revati run: FAILED:"))
    assert line.startswith("revati run: FAILED: EngineCrashed: the engine core (VLLM::EngineCore"), line
    # the signal, unless vLLM's API server reaped its engine core first: then the line says so
    assert "SIGKILL" in line or "its exit status went to its parent first" in line, line
    rep = o.report
    assert rep["outcome"] == "failed" and rep["failure"]["condition"] == "EngineCrashed"
    assert rep["completed"] < 200 and rep["metrics_scope"]
    print(f"fault at {o.injected_at_s:.1f} s into the load, clean exit {o.fault_to_exit_s:.2f} s later; "
          f"{rep['metrics_scope']}")
