"""The SGLang adapter: `python -m sglang.launch_server` under the emulator.

The semantic layer (revati/sglang_plugin) comes in through SGLang's own general-plugin entry
point, `sglang.srt.plugins` (sglang/srt/plugins/__init__.py, since 0.5.x): SGLang calls
load_plugins() early in every one of its processes (launch_server, the scheduler of each TP
rank, the detokenizer), the same contract as vLLM's `vllm.general_plugins`. pyproject.toml
declares the entry point; no sitecustomize or .pth is needed.
"""

from __future__ import annotations

import re
from pathlib import Path

from revati.engines.base import Build, EngineAdapter


class SglangAdapter(EngineAdapter):
    name = "sglang"
    builds = {
        "0.5.23": Build(torch="2.14.1", cuda="13.0", layer="srt",
                        notes="sglang.srt: the scheduler's process_batch_result (sampled ids), "
                              "ForwardBatch (batch composition); torch 2.14.1, flashinfer 0.7.2, sglang-kernel 0.4.10"),
    }
    versions = tuple(builds)
    distribution = "sglang"
    load_generator = "vllm bench serve"
    bench_backend = "openai"
    health_path = "/health"
    plugin_entry_point = ("sglang.srt.plugins", "revati.sglang_plugin:register")

    # Process titles (setproctitle): "sglang::scheduler[_DP<i>][_PP<i>][_TP<i>]..." (one per
    # rank), "sglang::detokenizer", "sglang::data_parallel_controller"; the launching process
    # (HTTP server and tokenizer manager) keeps its command line. SGLang's log lines carry a
    # rank prefix ("[time TP0]"), not a pid: log_prefix matches none of them.
    process_name = re.compile(r"^(?:sglang::)?(scheduler|detokenizer|data_parallel_controller)"
                              r"(?:_[A-Z]+(?:_[A-Z]+)*\d+)*$")
    log_prefix = re.compile(r"\((?P<name>sglang::\w+) pid=(?P<pid>\d+)\)")
    _KINDS = {"scheduler": "engine", "detokenizer": "worker", "data_parallel_controller": "engine"}

    def serve_command(self, model: str, *, host: str, port: int, serve_args: list[str]) -> list[str]:
        return [str(self.bin_dir / "python"), "-m", "sglang.launch_server", "--model-path", model,
                "--load-format", "dummy", "--host", host, "--port", str(port), *serve_args]

    def parallel_args(self, *, tensor_parallel_size: int, pipeline_parallel_size: int) -> list[str]:
        return ["--tp-size", str(tensor_parallel_size), "--pp-size", str(pipeline_parallel_size)]

    def tokenizer_args(self, tokenizer: str) -> list[str]:
        return ["--tokenizer-path", tokenizer]

    def emulator_serve_args(self, *, tensor_parallel_size: int, given: set[str]) -> list[str]:
        args: list[str] = []
        # FlashInfer's top-k/top-p sampler (SGLang's default sampling backend) is JIT-compiled with
        # nvcc at the first sampled request and needs the cuRAND headers; kernels never run here,
        # so SGLang's torch sampler is used (as VLLM_USE_FLASHINFER_SAMPLER=0 does for vLLM).
        if "sampling-backend" not in given:
            args += ["--sampling-backend", "pytorch"]
        # SGLang's custom all-reduce uses IPC buffers and device flags that nothing emulates.
        if tensor_parallel_size > 1 and "disable-custom-all-reduce" not in given:
            args.append("--disable-custom-all-reduce")
        return args

    def env_defaults(self, *, nccl_library: str) -> dict[str, str]:
        env = {
            # pynccl opens libnccl.so.2 with ctypes: point it at the shim's NCCL (as for vLLM).
            "SGLANG_NCCL_SO_PATH": nccl_library,
            # NOTE: by default SGLang's /health runs a 1-token generate and answers only after an
            # asyncio.sleep(1) on the (virtual) clock; when the clock runs slowly (TP=2 here: 8
            # wall s per /health) that never fits the start-up probe's 2 s timeout, and revati run
            # waited 860 s for a server that was up. With this off, /health answers 503 until
            # SGLang's own warm-up generate has set it Up, then 200: still a readiness probe.
            # /health_generate keeps the deep check.
            "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "0",
        }
        # NOTE: SGLang JIT-compiles some of its kernels at first use (sglang/kernels/jit: nvcc,
        # then `c++ ... -L$CUDA_HOME/lib64 -lcudart`); CUDA_HOME defaults to nvcc's parent,
        # which on a machine with an nvcc wrapper in /usr/local/bin has no lib64. A toolkit's
        # root has both. The build is cached (~/.cache/sglang/jit), and its module's kernels
        # are registered with, and launched through, the shim like any other.
        toolkit = Path("/usr/local/cuda")
        if (toolkit / "lib64").is_dir():
            env["CUDA_HOME"] = str(toolkit)
        return env

    def bench_command(self, args: list[str]) -> list[str]:
        # NOTE: vLLM's `vllm bench serve` (revati's environment) against SGLang's OpenAI
        # endpoint: the same load generator and metric names as for vLLM, so a side-by-side
        # differs by the engine only.
        from revati.engines.base import VENV_BIN

        return [str(VENV_BIN / "vllm"), "bench", "serve", *args]

    def process_kind(self, name: str) -> str | None:
        m = self.process_name.match(name)
        return self._KINDS[m.group(1)] if m else None
