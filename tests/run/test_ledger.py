"""revati.run.ledger: the /proc sampler of a run's process tree and the grouping of its threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from revati import engines
from revati.run import ledger

# A child that names a thread (as the shim's waker is named), burns CPU in it, and starts a
# grandchild that burns CPU too.
CHILD = r"""
import ctypes, os, subprocess, sys, threading, time
def spin(s):
    t = time.thread_time() + s
    while time.thread_time() < t:
        pass
def named():
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write("revati-condwake")
    spin(0.6)
th = threading.Thread(target=named); th.start()
g = subprocess.Popen([sys.executable, "-c", "import time\nt = time.thread_time() + 0.6\nwhile time.thread_time() < t: pass"])
th.join(); g.wait()
time.sleep(0.3)
"""


def test_the_sampler_finds_threads_and_grandchildren_and_their_cpu():
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    s = ledger.TreeSampler(proc.pid, interval_s=0.05).start()
    _, _, ru = os.wait4(proc.pid, 0)
    s.stop()
    by_comm = {}
    for th in s.threads.values():
        if th.series:
            by_comm[th.comm] = by_comm.get(th.comm, 0) + th.series[-1][1] / 1e9
    assert by_comm.get("revati-condwake", 0) >= 0.4
    assert len(s.procs) == 2  # the child and its grandchild
    grandchild = [p for p in s.procs if p != proc.pid][0]
    assert sum(th.series[-1][1] for th in s.threads.values() if th.pid == grandchild and th.series) / 1e9 >= 0.4
    # what was sampled is at most what the kernel counted for the tree (plus rounding)
    sampled = sum(th.series[-1][1] for th in s.threads.values() if th.series) / 1e9
    assert sampled <= ru.ru_utime + ru.ru_stime + 0.05
    t0, t1 = s.busy[0][0], s.busy[-1][1]
    d = ledger.ledger(s, {"run": (t0, t1)}, rusage_cpu_s=ru.ru_utime + ru.ru_stime)
    em = [r for r in d["rows"] if r["side"] == "emulator"]
    assert d["sampled_cpu_s"] >= 1.0 and d["rusage_cpu_s"] >= d["sampled_cpu_s"] - 0.05
    assert "sampled" in ledger.format_ledger(d)
    assert not em  # a plain python child is no part of the emulator (its role is "other")


def test_roles_and_thread_groups():
    vllm = engines.get()
    assert ledger.process_role("VLLM::EngineCore", False, vllm) == ("control plane", "engine core")
    assert ledger.process_role("VLLM::Worker_TP1", False, vllm) == ("control plane", "workers")
    assert ledger.process_role("/v/bin/python3 /v/bin/vllm serve m --port 1", False, vllm) == \
        ("control plane", "API server")
    assert ledger.process_role("/v/bin/python3 /v/bin/vllm bench serve --backend vllm", False, vllm) == \
        ("control plane", "load generator")
    assert ledger.process_role("/v/bin/python3 -m revati.cli sidecar --endpoint ipc://x", False, vllm) == \
        ("emulator", "prediction sidecar")
    assert ledger.process_role("/v/bin/python3 .venv/bin/revati run examples/default.yaml", True, vllm) == \
        ("emulator", "revati run")
    assert ledger.process_role("perf record -F 99 -- revati run x", True, vllm)[0] == "ledger"
    assert ledger.thread_group("emulator", "revati run", "revati-timekeep", False) == ("emulator", "Timekeeper")
    assert ledger.thread_group("emulator", "revati run", "revati-governor", False) == \
        ("emulator", "contention governor")
    assert ledger.thread_group("control plane", "engine core", "revati-condwake", False)[0] == "emulator"
    assert ledger.thread_group("control plane", "engine core", "gloo_tcp_loop", False) == \
        ("control plane", "engine core")


def test_name_os_threads_names_this_process_threads():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="revati-timekeeper-test", daemon=True)
    t.start()
    try:
        ledger.name_os_threads()
        with open(f"/proc/self/task/{t.native_id}/comm") as f:
            assert f.read().strip() == "revati-timekeep"
    finally:
        stop.set()
        t.join()


def test_explain_shows_the_ledger_or_the_phases(tmp_path, capsys):
    import json

    from revati.run import explain

    (tmp_path / "report.json").write_text(json.dumps({"emulation": {"startup": {"phases_s": {
        "environment": 0.6, "torch_compile": 31.5, "load": 75.0}}}}))
    explain.print_wall_time(tmp_path)
    out = capsys.readouterr().out
    assert "torch_compile 31.5" in out and "benchmarks/speed.py" in out
    proc = subprocess.Popen([sys.executable, "-c", "import time\nt = time.thread_time() + 0.3\nwhile time.thread_time() < t: pass"])
    s = ledger.TreeSampler(proc.pid, interval_s=0.05).start()
    proc.wait()
    s.stop()
    d = ledger.ledger(s, {"run": (s.busy[0][0], s.busy[-1][1])}, command="benchmarks/speed.py x")
    d["startup_phases_s"] = {"environment": 0.5}
    (tmp_path / ledger.LEDGER_FILE).write_text(json.dumps(d))
    explain.print_wall_time(tmp_path)
    out = capsys.readouterr().out
    assert "Wall-time ledger" in out and "reproduce: benchmarks/speed.py x" in out and "environment 0.5" in out
