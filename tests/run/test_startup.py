"""revati.run.startup: the start-up phases from the runner's steps and the engine's log lines."""

from __future__ import annotations

import io
import time

from rich.console import Console

from revati import engines
from revati.run import startup


def _wait_for(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def _phase(p: startup.StartupProgress) -> str:
    return p.spells[-1].phase


def test_phases_from_steps_and_log_lines(tmp_path):
    out = io.StringIO()
    p = startup.StartupProgress(Console(file=out, width=200), engines.get(), poll_s=0.01)
    log = tmp_path / "server.log"
    log.write_text("a stale line of an earlier run: Capturing CUDA graphs\n")
    with p:
        p.enter("sidecar", 0)
        p.watch(log, 0)  # the stale log is removed: it must not count
        p.enter("engine_start", 0)
        assert not log.exists()
        with open(log, "w") as f:
            for line, phase in [
                ("(APIServer pid=1) INFO 12-02 18:49:07 [api_utils.py:286] non-default args: {}", "model_config"),
                ("(EngineCore pid=2) INFO 12-02 19:00:27 [core.py:133] Initializing a V1 LLM engine (v0.32.0)",
                 "engine_core"),
                ("(EngineCore pid=2) INFO 12-02 19:00:29 [model_runner.py:392] Loading model from scratch...", "weights"),
                ("(EngineCore pid=2) INFO 12-02 19:00:36 [monitor.py:40] [backbone] Starting torch.compile",
                 "torch_compile"),
                ("(EngineCore pid=2) INFO [monitor.py:62] [backbone] torch.compile took 31.65 s in total", "warmup"),
                ("\rCapturing CUDA graphs (FULL):   0%|          | 0/2 [00:00<?, ?it/s]", "cudagraph_capture"),
                ("(EngineCore pid=2) INFO [model_runner.py:1127] Graph capturing finished in 3 secs", "warmup"),
                ("Capturing CUDA graphs (PIECEWISE):  6%|", "cudagraph_capture"),
                ("(EngineCore pid=2) INFO [model_runner.py:1127] Graph capturing finished in 4 secs", "warmup"),
                ("(APIServer pid=1) INFO 12-02 19:01:21 [entry.py:136] Supported tasks: ['generate']", "server_ready"),
            ]:
                f.write(line + "\n")
                f.flush()
                _wait_for(lambda: _phase(p) == phase)
        p.ready()
        with open(log, "a") as f:  # no longer watched: a late line does not move the phase
            f.write("Capturing CUDA graphs (FULL):\n")
        p.enter("load_start")
        time.sleep(0.05)
        assert _phase(p) == "load_start"
        p.finish()
    t = time.monotonic()
    p.record("load", t, t + 2.0)
    ph = p.phases()
    order = [s["phase"] for s in ph["spells"]]
    assert order == ["environment", "sidecar", "engine_start", "model_config", "engine_core", "weights",
                     "torch_compile", "warmup", "cudagraph_capture", "warmup", "cudagraph_capture", "warmup",
                     "server_ready", "load_start", "load"]
    # a phase entered twice adds up its spells; the totals keep the phase order
    spells = [s for s in ph["spells"] if s["phase"] == "warmup"]
    assert abs(ph["phases_s"]["warmup"] - sum(s["end_s"] - s["start_s"] for s in spells)) < 0.05
    assert list(ph["phases_s"]) == [k for k, _ in startup.PHASES if k in ph["phases_s"]]
    assert ph["phases_s"]["load"] == 2.0
    assert ph["startup_wall_s"] <= t - p.t0 + 0.01
    assert all(s["end_s"] is not None and s["end_s"] >= s["start_s"] for s in ph["spells"])
    # not a terminal: plain lines, one per finished spell, and the summary
    text = out.getvalue()
    assert "replica 0: torch.compile" in text and "revati run: start-up environment" in text


def test_finish_is_idempotent_and_ends_the_open_phase():
    p = startup.StartupProgress(Console(file=io.StringIO()), engines.get(), poll_s=0.01)
    with p:
        p.enter("sidecar", 0)
    p.finish()
    assert all(s.end is not None for s in p.spells)
    assert [s.phase for s in p.spells] == ["environment", "sidecar"]


def test_a_terminal_gets_the_live_table():
    out = io.StringIO()
    p = startup.StartupProgress(Console(file=out, force_terminal=True, width=120), engines.get(), poll_s=0.01)
    with p:
        p.enter("sidecar", 0)
        time.sleep(0.3)
    text = out.getvalue()
    assert "prediction sidecar" in text and "start-up, elapsed" in text
