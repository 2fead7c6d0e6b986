"""vLLM end to end under the time warp (issue 3): `vllm serve` and `vllm bench serve` run as
two commands on one deployment clock (`revati exec --clock PATH`), so arrivals and token
timestamps are virtual. With constant 1 ms ops, the decode TPOT must be the step's GPU time
(ops per decode step x 1 ms, counted from the trace) plus at most the engine's CPU share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from revati.engines.base import VENV_BIN
from revati.launch.processes import free_port

pytestmark = pytest.mark.slow

MODEL = "meta-llama/Llama-3.1-8B"


def _exec(clock: str, *cmd: str, trace: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "revati.cli", "exec", "--clock", clock, "--predictor", "constant:1ms",
            *(["--trace", str(trace)] if trace else []), "--", *cmd]


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def decode_gpu_ms(trace: Path, steps: list[dict], t0: float, t1: float) -> list[float]:
    """GPU ms issued between consecutive decode steps of [t0, t1] (virtual seconds)."""
    events = json.loads(trace.read_text())["traceEvents"]
    ops = sorted((e["ts"] / 1e6, e["dur"] / 1e3) for e in events if e.get("ph") == "X")
    times = [s["t"] for s in steps if s.get("num_prefill") == 0 and s.get("num_decode", 0) > 0 and t0 <= s["t"] <= t1]
    out = []
    import bisect

    starts = [o[0] for o in ops]
    for a, b in zip(times, times[1:]):
        i, j = bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)
        out.append(sum(d for _, d in ops[i:j]))
    return out


def test_vllm_serve_and_bench_on_one_virtual_clock(tmp_path):
    clock = f"/dev/shm/revati-test-{os.getpid()}-{int(time.time())}"
    port = free_port()
    steps, trace = tmp_path / "steps.jsonl", tmp_path / "trace.json"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(_exec(clock, "env", f"REVATI_STEP_LOG={steps}", str(VENV_BIN / "vllm"), "serve", MODEL,
                                    "--load-format", "dummy", "--port", str(port), "--max-model-len", "2048",
                                    trace=trace),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 1500
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not come up"
            time.sleep(1)
        engine = int(next(ln.split("EngineCore pid=")[1].split(")")[0]
                          for ln in (tmp_path / "server.log").read_text().splitlines() if "EngineCore pid=" in ln))
        cpu0, w0 = _cpu_s(engine), time.monotonic()
        bench = subprocess.run(_exec(clock, str(VENV_BIN / "vllm"), "bench", "serve", "--backend", "vllm",
                                     "--base-url", f"http://127.0.0.1:{port}", "--model", MODEL,
                                     "--dataset-name", "random", "--random-input-len", "64",
                                     "--random-output-len", "32", "--num-prompts", "4", "--request-rate", "inf",
                                     "--ignore-eos", "--save-result", "--result-dir", str(tmp_path),
                                     "--result-filename", "bench.json"),
                               capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - w0
        cpu = _cpu_s(engine) - cpu0
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(120)
        log.close()
    result = json.loads((tmp_path / "bench.json").read_text())
    step_list = [json.loads(ln) for ln in steps.read_text().splitlines() if ln.strip()]
    bench_steps = [s for s in step_list if s["t"] >= step_list[-1]["t"] - result["duration"] - 1]
    gpu = sorted(decode_gpu_ms(trace, step_list, bench_steps[0]["t"], bench_steps[-1]["t"]))
    gpu_step = gpu[len(gpu) // 2]
    cpu_step = 1e3 * cpu / max(1, len(bench_steps))
    tpot = result["mean_tpot_ms"]
    print(f"TPOT {tpot:.1f} ms; GPU per decode step {gpu_step:.1f} ms (constant 1 ms x ops); engine CPU "
          f"{cpu_step:.1f} ms per step over {len(bench_steps)} steps; bench {result['duration']:.2f} virtual s "
          f"in {wall:.1f} wall s (incl. the client's start-up)")
    assert gpu_step >= 50  # dozens of ops per decode step
    assert gpu_step * 0.98 <= tpot <= gpu_step + cpu_step + 10
