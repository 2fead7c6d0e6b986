"""The vLLM adapter: `vllm serve` under the emulator, driven by `vllm bench serve`."""

from __future__ import annotations

import re

from revati.engines.base import Build, EngineAdapter, UnknownEngineError


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string ("0.15.1", "0.16.0rc1", "0.15.1+cu128")."""
    return tuple(int(x) for x in re.match(r"\d+(?:\.\d+)*", version).group(0).split("."))


class VllmAdapter(EngineAdapter):
    name = "vllm"
    # NOTE: the first is the default (the one pyproject.toml installs beside revati); the others
    # get an environment of their own on first use (revati/engines/environments.py).
    builds = {
        "0.33.0": Build(torch="2.14.0", cuda="13.0", layer="v2",
                        notes="V2 model runner (vllm/v1/worker/gpu/): sample() and AsyncOutput.get_output; "
                              "torch 2.14, triton 3.8, NCCL 2.30"),
        "0.32.0": Build(torch="2.13.0", cuda="13.0", layer="v2",
                        notes="V2 model runner, as 0.33; torch 2.13, triton 3.7, NCCL 2.29"),
        "0.29.0": Build(torch="2.13.0", cuda="13.0", layer="v2",
                        notes="V2 model runner (its default, VllmConfig.use_v2_model_runner); every v2 seam has "
                              "0.32's shape; torch 2.13 and NVIDIA wheels as 0.32's, flashinfer 0.6.18"),
        "0.15.1": Build(torch="2.9.1", cuda="12.8", layer="v1",
                        notes="V1 model runner (vllm/v1/worker/gpu_model_runner.py): the sampler's output and "
                              "_bookkeeping_sync; CUDA 12 stack; no --shutdown-timeout",
                        lacks=frozenset({"shutdown-timeout"})),
    }
    versions = tuple(builds)
    #: The semantic layer (revati/vllm_plugin/patches.py LAYERS) of each vLLM version range
    #: [first, end): which model runner's internals the seams wrap. V2 ("vllm/v1/worker/gpu/")
    #: became the default runner between these ranges; a version outside every range stops the
    #: engine with this list rather than emulating with seams that may not fit.
    SEMANTIC_LAYERS = (("0.15.0", "0.16.0", "v1"), ("0.29.0", "0.30.0", "v2"), ("0.32.0", "0.34.0", "v2"))
    distribution = "vllm"
    load_generator = "vllm bench serve"
    bench_backend = "vllm"
    # NOTE: the hooks are found through the entry point that pyproject.toml declares; vLLM loads
    # every vllm.general_plugins entry in each of its processes (API server, engine core, workers).
    plugin_entry_point = ("vllm.general_plugins", "revati.vllm_plugin:register")

    # APIServer[_i], EngineCore[_DPi], Worker[_DPi][_PPi][_PCPi][_TPi][_DCPi][_EPi]; titles are
    # "VLLM::<name>" (VLLM_PROCESS_NAME_PREFIX) and log lines start "(<name> pid=<pid>)".
    process_name = re.compile(r"^(?:VLLM::)?(APIServer|EngineCore|Worker)(?:_\d+|(?:_[A-Z]+\d+)*)$")
    log_prefix = re.compile(r"\((?P<name>(?:APIServer|EngineCore|Worker)[A-Za-z0-9_]*) pid=(?P<pid>\d+)\)")
    _KINDS = {"APIServer": "api", "EngineCore": "engine", "Worker": "worker"}

    @classmethod
    def semantic_layer(cls, version: str) -> str:
        """The seam set for a vLLM version.

        Raises:
            UnknownEngineError: the version is in no range; names the ranges.
        """
        v = _release(version)
        for first, end, layer in cls.SEMANTIC_LAYERS:
            if _release(first) <= v < _release(end):
                return layer
        ranges = ", ".join(f"[{a}, {b}): {layer}" for a, b, layer in cls.SEMANTIC_LAYERS)
        raise UnknownEngineError(f"revati's semantic layer has no seams for vllm {version} (layers by version: "
                                 f"{ranges}; revati/engines/vllm.py)")

    def serve_command(self, model: str, *, host: str, port: int, serve_args: list[str]) -> list[str]:
        # dummy weights: nothing is read from disk and the virtual memory takes the tensors
        return [str(self.bin_dir / "vllm"), "serve", model, "--load-format", "dummy", "--host", host,
                "--port", str(port), *serve_args]

    def parallel_args(self, *, tensor_parallel_size: int, pipeline_parallel_size: int) -> list[str]:
        return ["--tensor-parallel-size", str(tensor_parallel_size),
                "--pipeline-parallel-size", str(pipeline_parallel_size)]

    def tokenizer_args(self, tokenizer: str) -> list[str]:
        return ["--tokenizer", tokenizer]

    def emulator_serve_args(self, *, tensor_parallel_size: int, given: set[str]) -> list[str]:
        args: list[str] = []
        # The engine drains and exits on SIGTERM instead of being force-killed, so every
        # process's shim writes its final stats (the report's predictor figures) at exit.
        if "shutdown-timeout" not in given and "shutdown-timeout" not in self.build().lacks:
            args += ["--shutdown-timeout", "10"]
        # vLLM's custom all-reduce uses IPC buffers and device flags that nothing emulates.
        if tensor_parallel_size > 1 and "disable-custom-all-reduce" not in given:
            args.append("--disable-custom-all-reduce")
        return args

    def env_defaults(self, *, nccl_library: str) -> dict[str, str]:
        return {
            # The shared-memory broadcast queue: keep the yielding spin loop (see the facts note).
            "VLLM_USE_SPINLOOP_EXT": "0",
            # TP > 1: all-reduce through the shim's NCCL only. FlashInfer's and symmetric-memory
            # all-reduce use IPC buffers and device-side flags that nothing here emulates; the
            # custom all-reduce has no variable (emulator_serve_args turns it off).
            "VLLM_ALLREDUCE_USE_FLASHINFER": "0",
            # pynccl opens libnccl.so.2 with ctypes and calls through that handle, which would
            # bypass the preloaded shim: point it at the shim's NCCL.
            "VLLM_NCCL_SO_PATH": nccl_library,
            "VLLM_ALLREDUCE_USE_SYMM_MEM": "0",
            "VLLM_NO_USAGE_STATS": "1",
            # FlashInfer's top-k/top-p sampler JIT-compiles CUDA sources at start-up (minutes, and
            # it needs cuRAND headers); kernels never run here, so vLLM's own sampler path is used.
            # The sampler is a small share of a step; the predictor accounts for its kernels by family.
            "VLLM_USE_FLASHINFER_SAMPLER": "0",
        }

    def bench_command(self, args: list[str]) -> list[str]:
        # NOTE: the load generator is the harness, not the emulated server: revati's own vLLM's
        # `vllm bench serve` drives every version, so that rows of two versions differ by the
        # server only, and the features the load plan uses (the timed_trace dataset of shared-
        # prefix and staged loads, per-request latencies) are there. vLLM 0.15.1's own bench has
        # no timed_trace dataset: every shared-prefix validation row failed with its
        # "invalid choice: 'timed_trace'".
        from revati.engines.base import VENV_BIN

        return [str(VENV_BIN / "vllm"), "bench", "serve", *args]

    def process_kind(self, name: str) -> str | None:
        m = self.process_name.match(name)
        return self._KINDS[m.group(1)] if m else None
