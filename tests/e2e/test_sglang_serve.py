"""The unmodified SGLang server (`python -m sglang.launch_server`, its default multi-process
layout: HTTP server and tokenizer manager, scheduler, detokenizer) on a virtual H100, CUDA
graphs on: it serves the OpenAI API, every request gets exactly max_tokens tokens, and its
kernels reach the predictor's families. Needs the sglang 0.5.23 environment
(`revati engines install sglang 0.5.23`); skipped without it. Minutes on 2 cores."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from revati import engines, models
from revati.engines import environments
from revati.launch.bench import run_bench
from revati.launch.stats import summarize_stats
from revati.run.orchestrator import local_server
from revati.run.plan import bench_env

pytestmark = pytest.mark.slow

SGLANG = engines.get("sglang")
MODEL = "meta-llama/Llama-3.1-8B"

if not environments.env_of(SGLANG).installed():
    pytest.skip(f"sglang {SGLANG.version} is not installed ({environments.env_of(SGLANG).path}): "
                f"`revati engines install sglang {SGLANG.version}`", allow_module_level=True)


def completion(url: str, model: str, prompt: str, max_tokens: int, **extra) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, **extra}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def test_sglang_serves_llama_3_1_8b_with_cuda_graphs_and_exact_max_tokens(tmp_path):
    stats = tmp_path / "stats" / "shim"
    stats.parent.mkdir()
    args = SGLANG.emulator_serve_args(tensor_parallel_size=1, given=set())
    with local_server(MODEL, serve_args=args, log_path=tmp_path / "server.log", engine=SGLANG,
                      stats=str(stats)) as server:
        log = server.log_path.read_text()
        assert "Capture target decode CUDA graph end" in log, log[-3000:]
        model = SGLANG.served_model(server.url)
        assert model == MODEL
        out = completion(server.url, model, "The capital of France is", 32, ignore_eos=True, temperature=0.0)
        assert out["usage"]["completion_tokens"] == 32 and out["choices"][0]["finish_reason"] == "length"
        # without ignore_eos, sampled (the model's default temperature): the stand-ins are never EOS
        out = completion(server.url, model, "Hello", 7)
        assert out["usage"]["completion_tokens"] == 7 and out["choices"][0]["finish_reason"] == "length"
        # the radix cache works as in real SGLang: a second request with the same long prompt
        # reuses its prefix (the scheduler's "#cached-token" in its prefill log line)
        shared = " ".join(f"word{i}" for i in range(300))
        for _ in range(2):
            assert completion(server.url, model, shared, 4, ignore_eos=True)["usage"]["completion_tokens"] == 4
        cached = [int(m) for m in re.findall(r"#cached-token: (\d+)", server.log_path.read_text())]
        assert cached and max(cached) > 500, cached

        result_dir = tmp_path / "bench"
        result_dir.mkdir()
        bench_args = ["--backend", SGLANG.bench_backend, "--base-url", server.url, "--model", model,
                      "--tokenizer", str(models.resolve(MODEL).model),
                      "--dataset-name", "random", "--random-input-len", "128", "--random-output-len", "32",
                      "--num-prompts", "20", "--request-rate", "inf", "--ignore-eos", "--save-result",
                      "--result-dir", str(result_dir), "--result-filename", "bench.json"]
        run = run_bench(SGLANG.bench_command(bench_args), bench_env("h100-sxm", False, 0), result_dir, 1800,
                        clocks=lambda: (time.monotonic(), None))
        assert run.rc == 0 and run.bench is not None, (result_dir / "bench.log").read_text()[-3000:]
        assert run.bench["completed"] == 20 and run.bench.get("failed", 0) == 0
        assert run.bench["total_output_tokens"] == 20 * 32
    # the scheduler's shim wrote its stats at SIGTERM; the semantic layer handed it the steps
    total = summarize_stats(stats)
    print("sglang shim summary:", {k: total.get(k) for k in ("processes", "steps", "graph_launches", "coverage")},
          total["family_coverage"])
    assert total["processes"] >= 1 and total.get("steps", 0) > 0 and total.get("graph_launches", 0) > 0
    for family in ("attention", "norm", "activation", "rotary", "cache_write"):
        assert total["family_coverage"].get(family) == 1.0, (family, total["family_coverage"])


def test_revati_run_of_a_short_sglang_spec_writes_its_report(tmp_path):
    spec = (Path(__file__).resolve().parents[2] / "examples" / "sglang-default.yaml").read_text()
    # 20 prompts, every output exactly 128 tokens (rangeRatio 0), so max_tokens is checked exactly
    spec = (spec.replace("numPrompts: 200", "numPrompts: 20").replace("requestRate: 4", "requestRate: 8")
            .replace("rangeRatio: 0.2", "rangeRatio: 0.0"))
    assert "rangeRatio: 0.0" in spec
    (tmp_path / "spec.yaml").write_text(spec)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "revati.cli", "run", str(tmp_path / "spec.yaml"), "--out", str(out)],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    rep = json.loads((out / "report.json").read_text())
    bench = json.loads((out / "bench.json").read_text())
    assert rep["completed"] == 20 and not rep.get("failed")
    assert rep["total_output_tokens"] == 20 * 128 and bench["output_lens"] == [128] * 20
    assert rep["mean_ttft_ms"] > 0 and rep["mean_tpot_ms"] > 0
    em = rep["emulation"]
    assert em["shim_steps"] > 0 and em["graph_launches"] > 0 and em["predictor"]["coverage"] > 0.9
