"""Launching processes under the emulator: the environment that makes a process tree see
virtual GPUs, and the merge of per-process trace parts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from revati import envs
from revati.catalog import DEFAULT_GPU, get_gpu

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIM_NAME = "librevati_shim.so"


class ShimNotBuiltError(RuntimeError):
    pass


def shim_dir() -> Path:
    """The folder with the shim and its libcuda.so.1 / libnvidia-ml.so.1 names."""
    configured = envs.get("REVATI_SHIM_DIR")
    d = Path(configured) if configured else REPO_ROOT / "shim" / "build" / "lib"
    if not (d / SHIM_NAME).exists():
        raise ShimNotBuiltError(
            f"the shim is not built: {d / SHIM_NAME} is missing. Build it with `make -C shim` "
            "(scripts/setup.sh does), or point REVATI_SHIM_DIR at a folder that has it.")
    return d


def emulator_env(
    gpu: str = DEFAULT_GPU,
    *,
    num_gpus: int | None = None,
    predictor: str | None = None,
    trace: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    offline_hub: bool = True,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """Returns the environment for a process tree that runs under the emulator.

    Args:
        gpu: catalog key of the virtual GPU.
        num_gpus: GPUs on the virtual node (default: the part's node size).
        predictor: duration source (roofline, constant:1ms, ...).
        trace: path of the merged Perfetto trace; processes write parts next to it.
        stats: prefix of per-process statistics files.
        offline_hub: serve the shipped model configs and tokenizers as an offline HF hub.
        base: environment to start from (default: os.environ).
    """
    get_gpu(gpu)  # validates, with the list of choices in the error
    d = shim_dir()
    env = dict(os.environ if base is None else base)
    preload = str(d / SHIM_NAME)
    env["LD_PRELOAD"] = ":".join(p for p in [preload, env.get("LD_PRELOAD", "")] if p)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [str(d), env.get("LD_LIBRARY_PATH", "")] if p)
    env["TRITON_LIBCUDA_PATH"] = str(d)
    env["REVATI_ACTIVE"] = "1"
    env["REVATI_GPU"] = gpu
    if num_gpus is not None:
        env["REVATI_NUM_GPUS"] = str(num_gpus)
    if predictor:
        env["REVATI_PREDICTOR"] = predictor
    if trace:
        env["REVATI_TRACE"] = str(Path(trace).resolve())
    if stats:
        env["REVATI_STATS_FILE"] = str(Path(stats).resolve())
    # vLLM's shared-memory broadcast queue: keep the yielding spin loop (see the facts note).
    env.setdefault("VLLM_USE_SPINLOOP_EXT", "0")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    # FlashInfer's top-k/top-p sampler JIT-compiles CUDA sources at start-up (minutes, and it
    # needs cuRAND headers); kernels never run here, so vLLM's own sampler path is used. The
    # sampler is a small share of a step; the predictor accounts for its kernels by family.
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    if offline_hub:
        from revati import models

        env.update(models.prepare_offline_hub())
    return env


def merge_trace(path: str | os.PathLike) -> int:
    """Merges <path>.parts/*.jsonl into one Chrome trace at path. Returns the event count."""
    path = Path(path)
    parts = path.with_name(path.name + ".parts")
    events = []
    for f in sorted(parts.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a process killed mid-write leaves a truncated last line
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
    shutil.rmtree(parts, ignore_errors=True)
    return len(events)
