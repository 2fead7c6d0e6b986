"""Per-step batch composition, handed to the emulator.

Attention time depends on the sequence lengths, which on a real GPU live in device
memory; the host knows them too (vLLM's V2 runner keeps CPU mirrors). We read the
host-side arrays of the ``InputBatch`` that ``GPUModelRunner.prepare_inputs`` returns
and publish one dict per model step:

    {"num_reqs", "num_tokens", "num_prefill", "num_decode",
     "query_lens": [...], "seq_lens": [...],              # the contract
     "context_lens": [...], "num_tokens_padded", "num_draft_tokens",
     "num_prefill_as_decode", "step", "pid", "t"}          # extras, may grow (t: monotonic s)

Requests are in batch order (vLLM sorts decodes first). ``seq_lens[i] =
context_lens[i] + query_lens[i]`` where ``context_lens`` is the number of tokens
already in the KV cache (prefix-cache hits and earlier chunks included). A request
counts as *prefill* while it still has prompt (or resumed) tokens to compute; of
those, ``num_prefill_as_decode`` are one-token extensions that vLLM runs as decodes.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from typing import Any

import numpy as np

RING_SIZE = int(os.environ.get("REVATI_STEP_RING", "4096") or 4096)

#: The most recent step dicts of this process (newest last).
STEP_RING: collections.deque[dict[str, Any]] = collections.deque(maxlen=RING_SIZE)

_lock = threading.Lock()
_step_counter = 0
_log_path: str | None = None
_log_fd: int | None = None


def _log_fd_for(path: str) -> int:
    global _log_fd, _log_path
    if _log_fd is None or _log_path != path:
        if _log_fd is not None:
            try:
                os.close(_log_fd)
            except OSError:
                pass
        # O_APPEND: each line is one write(), so lines from the workers of a TP group
        # (separate processes) interleave whole.
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _log_path = path
    return _log_fd


def step_hook(batch: dict[str, Any]) -> None:
    """Receive one step's batch composition.

    Hands it to the shim (``revati_set_step``), appends it to :data:`STEP_RING`, and when
    ``REVATI_STEP_LOG`` names a file, appends one JSON line to it.
    """
    send_step_to_shim(batch)
    global _step_counter
    with _lock:
        _step_counter += 1
        batch.setdefault("step", _step_counter)
        batch.setdefault("pid", os.getpid())
        # CLOCK_MONOTONIC, as vllm bench's perf_counter (virtual under the time warp): the
        # report plots the running batch size against the requests' timeline.
        batch.setdefault("t", time.monotonic())
        STEP_RING.append(batch)
        path = os.environ.get("REVATI_STEP_LOG")
        if path:
            line = (json.dumps(batch, separators=(",", ":")) + "\n").encode()
            os.write(_log_fd_for(path), line)


_shim_fns: Any = None


def _shim() -> Any:
    """The shim's revati_set_model / revati_set_step, or False outside the emulator."""
    global _shim_fns
    if _shim_fns is None:
        import ctypes

        try:
            lib = ctypes.CDLL(None)  # the preloaded shim's symbols are global
            lib.revati_set_step.argtypes = [ctypes.c_int64] * 10
            lib.revati_set_model.argtypes = [ctypes.c_int] * 5
            _shim_fns = lib
        except (OSError, AttributeError):
            _shim_fns = False
    return _shim_fns


def send_model_to_shim(runner: Any) -> None:
    """Hands the per-GPU attention and MLP shape to the shim, once per runner."""
    lib = _shim()
    if not lib or getattr(runner, "_revati_model_sent", False):
        return
    mc, pc = runner.model_config, runner.parallel_config
    hf = mc.hf_text_config
    tp = pc.tensor_parallel_size
    inter = getattr(hf, "intermediate_size", None) or 4 * mc.get_hidden_size()
    lib.revati_set_model(mc.get_num_attention_heads(pc), mc.get_num_kv_heads(pc), mc.get_head_size(),
                         mc.get_hidden_size(), int(inter) // tp)
    runner._revati_model_sent = True


def send_step_to_shim(batch: dict[str, Any]) -> None:
    """Hands one step's batch composition to the shim, which describes attention, norm,
    rotary and activation kernels launched in this step from it."""
    lib = _shim()
    if not lib:
        return
    q = np.asarray(batch["query_lens"], dtype=np.int64)
    kv = np.asarray(batch["seq_lens"], dtype=np.int64)
    pre = q > 1
    qp, kp = q[pre], kv[pre]
    kd = kv[~pre]
    pairs = int((qp * (kp - (qp - 1) / 2.0)).sum()) if qp.size else 0
    lib.revati_set_step(int(batch.get("num_tokens_padded") or batch["num_tokens"]), int(batch["num_reqs"]),
                        int(pre.sum()), int((~pre).sum()), int(qp.sum()), int(kp.sum()),
                        int(kp.max()) if kp.size else 0, pairs, int(kd.sum()), int(kd.max()) if kd.size else 0)


def batch_from_input_batch(input_batch: Any) -> dict[str, Any]:
    """Build the step dict from a vLLM 0.32 V2 ``InputBatch`` (host arrays only)."""
    n = int(input_batch.num_reqs)
    query = np.asarray(input_batch.num_scheduled_tokens[:n], dtype=np.int64)
    context = np.asarray(input_batch.num_computed_tokens_np[:n], dtype=np.int64)
    is_prefill = np.asarray(input_batch.is_prefilling_np[:n], dtype=bool)
    as_decode = getattr(input_batch, "prefill_runs_as_decode_np", None)
    num_as_decode = int(np.asarray(as_decode[:n], dtype=bool).sum()) if as_decode is not None else 0
    num_prefill = int(is_prefill.sum())
    return {
        "num_reqs": n,
        "num_tokens": int(input_batch.num_tokens),
        "num_prefill": num_prefill,
        "num_decode": n - num_prefill,
        "query_lens": query.tolist(),
        "seq_lens": (context + query).tolist(),
        "context_lens": context.tolist(),
        "num_tokens_padded": int(getattr(input_batch, "num_tokens_after_padding", input_batch.num_tokens)),
        "num_draft_tokens": int(getattr(input_batch, "num_draft_tokens", 0) or 0),
        "num_prefill_as_decode": num_as_decode,
    }


def _reset_for_tests() -> None:
    global _step_counter, _log_fd, _log_path
    with _lock:
        STEP_RING.clear()
        _step_counter = 0
        if _log_fd is not None:
            try:
                os.close(_log_fd)
            except OSError:
                pass
        _log_fd = None
        _log_path = None
