"""An FP8 dense model served for real under the emulator: Llama-3.1-8B's architecture shrunk to
2 layers, quantized online by vLLM (`--quantization fp8`, dynamic per-token activations), so
its linear layers run vLLM's CUTLASS 3.x FP8 GEMMs (cutlass_3x_gemm_sm90_fp8) on the virtual
H100. The shim must read each one's shape from its kernel parameters and describe it as an
FP8 GEMM (issue 16), not by its launch geometry.

About 2 minutes on 2 cores (the engine's start-up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revati import models
from revati.launch.stats import summarize_stats
from revati.run.orchestrator import local_server
from tests.e2e.test_vllm_serve import completion, served_model

pytestmark = pytest.mark.slow


def shrunk_llama_dir(tmp_path: Path, layers: int = 2) -> Path:
    cfg = dict(models.model_config("meta-llama/Llama-3.1-8B"))
    assert cfg["hidden_size"] == 4096 and cfg["intermediate_size"] == 14336
    cfg.update(num_hidden_layers=layers, max_position_embeddings=2048)
    d = tmp_path / "llama-2l"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return d


def test_fp8_linear_layers_are_described_as_fp8_gemms(tmp_path):
    r = models.resolve(shrunk_llama_dir(tmp_path))
    stats = tmp_path / "stats" / "stats"
    stats.parent.mkdir()
    args = ["--tokenizer", r.tokenizer, "--quantization", "fp8", "--enforce-eager", "--max-model-len", "1024",
            "--max-num-seqs", "8", "--shutdown-timeout", "10"]
    trace = tmp_path / "trace.json"
    with local_server(r.model, serve_args=args, log_path=tmp_path / "server.log", stats=str(stats),
                      trace=str(trace)) as server:
        out = completion(server.url, served_model(server.url), "Weights in eight bits", max_tokens=9,
                         ignore_eos=False)
        assert out["usage"]["completion_tokens"] == 9
    total = summarize_stats(stats)
    log = (tmp_path / "server.log").read_text()
    # the linear layers' GEMMs reached the predictor as GEMMs (cuBLAS or CUTLASS), and no CUTLASS
    # GEMM kernel was left to its launch geometry once serving began
    assert total["ops"].get("gemm", 0) > 0, total["ops"]
    assert total["step_family_ns"].get("gemm_kernel", 0) == 0, (total["step_family_ns"], log[-3000:])
    # ... and as FP8 GEMMs of the model's shapes: the fused QKV projection, 4096 -> 6144
    fp8 = [t for t in trace_files(trace) if '"dtype":"fp8_e4m3"' in t]
    assert fp8, "no FP8 GEMM in the trace"
    assert any('"k":4096' in t and ('"m":6144' in t or '"n":6144' in t) for t in fp8), fp8[:5]


def trace_files(trace: Path) -> list[str]:
    """The GEMM events of every process's trace: the merged trace if it was written, else the
    per-process parts (<trace>.parts/<pid>.jsonl)."""
    files = [trace] if trace.is_file() else sorted((trace.parent / (trace.name + ".parts")).glob("*.jsonl"))
    return [x for f in files for x in f.read_text(errors="replace").splitlines() if '"cat":"gemm"' in x]
