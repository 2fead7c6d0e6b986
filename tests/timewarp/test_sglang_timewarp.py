"""SGLang end to end under the time warp, as tests/timewarp/test_vllm_timewarp.py for vLLM: the
server and `vllm bench serve` are two commands on one deployment clock (`revati exec --clock`).
With constant 1 ms ops, the decode TPOT must be the step's GPU time (ops per decode step x 1 ms,
counted from the trace) plus at most the scheduler's CPU share. Needs the sglang 0.5.23
environment; skipped without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from revati import engines
from revati.engines import environments
from revati.engines.base import VENV_BIN
from revati.launch.processes import free_port
from tests.timewarp.test_vllm_timewarp import _cpu_s, decode_gpu_ms

pytestmark = pytest.mark.slow

MODEL = "meta-llama/Llama-3.1-8B"
SGLANG = engines.get("sglang")

if not environments.env_of(SGLANG).installed():
    pytest.skip(f"sglang {SGLANG.version} is not installed: `revati engines install sglang {SGLANG.version}`",
                allow_module_level=True)


def _exec(clock: str, *cmd: str, trace=None, engine: str | None = None) -> list[str]:
    return [sys.executable, "-m", "revati.cli", "exec", "--clock", clock, "--predictor", "constant:1ms",
            *(["--engine", engine] if engine else []), *(["--trace", str(trace)] if trace else []), "--", *cmd]


def _scheduler_pid(leader: int) -> int:
    for p in psutil.Process(leader).children(recursive=True):
        try:
            if p.name().startswith("sglang::schedul") or "sglang::scheduler" in " ".join(p.cmdline()):
                return p.pid
        except psutil.Error:
            continue
    raise AssertionError("no sglang::scheduler process in the server's tree")


def test_sglang_decode_step_is_its_ops_times_1ms_plus_its_cpu(tmp_path):
    clock = f"/dev/shm/revati-test-sgl-{os.getpid()}-{int(time.time())}"
    port = free_port()
    steps, trace = tmp_path / "steps.jsonl", tmp_path / "trace.json"
    log = open(tmp_path / "server.log", "w")
    cmd = SGLANG.serve_command(MODEL, host="127.0.0.1", port=port,
                               serve_args=[*SGLANG.emulator_serve_args(tensor_parallel_size=1, given=set()),
                                           "--context-length", "2048"])
    server = subprocess.Popen(_exec(clock, "env", f"REVATI_STEP_LOG={steps}", *cmd, trace=trace, engine="sglang"),
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
            assert time.monotonic() < deadline, "sglang did not come up"
            time.sleep(1)
        sched = _scheduler_pid(server.pid)
        cpu0, w0 = _cpu_s(sched), time.monotonic()
        bench = subprocess.run(_exec(clock, str(VENV_BIN / "vllm"), "bench", "serve", "--backend", "openai",
                                     "--base-url", f"http://127.0.0.1:{port}", "--model", MODEL,
                                     "--dataset-name", "random", "--random-input-len", "64",
                                     "--random-output-len", "32", "--num-prompts", "4", "--request-rate", "inf",
                                     "--ignore-eos", "--save-result", "--result-dir", str(tmp_path),
                                     "--result-filename", "bench.json"),
                               capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - w0
        cpu = _cpu_s(sched) - cpu0
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(120)
        log.close()
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["completed"] == 4 and result["total_output_tokens"] == 4 * 32
    step_list = [json.loads(ln) for ln in steps.read_text().splitlines() if ln.strip()]
    bench_steps = [s for s in step_list if s["t"] >= step_list[-1]["t"] - result["duration"] - 1]
    gpu = sorted(decode_gpu_ms(trace, step_list, bench_steps[0]["t"], bench_steps[-1]["t"]))
    gpu_step = gpu[len(gpu) // 2]
    cpu_step = 1e3 * cpu / max(1, len(bench_steps))
    tpot = result["mean_tpot_ms"]
    print(f"SGLang: TPOT {tpot:.1f} ms; GPU per decode step {gpu_step:.1f} ms (constant 1 ms x ops); scheduler CPU "
          f"{cpu_step:.1f} ms per step over {len(bench_steps)} steps; bench {result['duration']:.2f} virtual s "
          f"in {wall:.1f} wall s")
    assert gpu_step >= 50  # dozens of ops per decode step
    assert gpu_step * 0.98 <= tpot <= gpu_step + cpu_step + 10
