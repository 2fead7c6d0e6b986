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

Step anatomy (under the time warp). Each record also says where the step's virtual time went
on the thread that ran it, from the shim's per-thread counters (``revati_thread_anatomy``,
shim/src/timewarp.c) read at each step hook:

    {"rank", "tp_rank", "pp_rank", "replica", "tid",
     "t_start", "t_end", "dur_ms",                       # virtual s / ms; t_start == t
     "t_read_ms", "t_end_read_ms",                       # the clock reads' span around the counters
     "anatomy": {"ms": {state: ms},                      # the thread's states: they add up to dur_ms
                 "gpu_ms": {state: ms},                  # of which this process's GPU was busy
                 "gpu_busy_ms", "gpu_work_ms",           # GPU timeline busy; predicted work launched
                 "cpu_ms", "cpu_real_ms", "untracked_ms",  # thread CPU (virtual, real); see below
                 "real_ms", "sidecar_requests", "sidecar_real_ms", "freezes", "frozen_real_ms"}}

A step runs from its hook to the next step's hook on the same thread (``t_end``), so its
record is written then (or at the process's exit, with ``t_end`` and ``anatomy`` null).
States: run (CPU, or a wait the shim does not see), runner / sched (CPU inside vLLM's model
runner / scheduler), idle (the engine had no work), input (it took new requests), gpu (a GPU
sync), collective (waiting for the other ranks), sleep, poll, cond (the GIL ...), sem (Python
locks and queues), yield (vLLM's shm queue spin: waiting for the scheduler), sidecar
(predictor misses), frozen (JIT). ``untracked_ms`` is the CPU states' time that the thread's
CPU clock does not cover: blocked where the shim does not look, or queued for a core.
Ranks are kept apart: rank 0 writes ``REVATI_STEP_LOG``, rank r ``<stem>.rank<r><suffix>``.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from typing import Any

import numpy as np

from revati import envs

RING_SIZE = int(envs.get("REVATI_STEP_RING", "4096") or 4096)

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
    ``REVATI_STEP_LOG`` names a file, appends one JSON line to it: at once without the time
    warp; with it, once the step has ended (the next step on this thread), with its anatomy.
    """
    send_step_to_shim(batch)
    global _step_counter
    # CLOCK_MONOTONIC, as vllm bench's perf_counter (virtual under the time warp): the report
    # plots the running batch size against the requests' timeline. The counters are read
    # between two clock reads: the step log's check allows for a preemption between them.
    before = time.monotonic()
    snap = thread_anatomy()
    now = time.monotonic()
    with _lock:
        _step_counter += 1
        batch.setdefault("step", _step_counter)
        batch.setdefault("pid", os.getpid())
        batch.setdefault("t", now)
        batch.update(_where())
        STEP_RING.append(batch)
        path = envs.get("REVATI_STEP_LOG")
        tid = threading.get_ident()
        prev = _pending.pop(tid, None)
        if prev is not None:
            rec, start, p = prev
            finish_step(rec, start, snap, now, now - before)
            _write(p, rec)
        if snap is None:
            if path:
                _write(path, batch)
            return
        batch["tid"] = threading.get_native_id()
        batch["t_start"] = batch["t"]
        batch["t_read_ms"] = (now - before) * 1e3
        if path:
            _pending[tid] = (batch, snap, path)
            _flush_at_exit()
        else:
            _pending[tid] = (batch, snap, None)


def _write(path: str | None, rec: dict[str, Any]) -> None:
    if not path:
        return
    rank = rec.get("rank") or 0
    if rank:
        stem, dot, suffix = path.rpartition(".")
        path = f"{stem}.rank{rank}.{suffix}" if dot and "/" not in suffix else f"{path}.rank{rank}"
    line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
    os.write(_log_fd_for(path), line)


def finish_step(rec: dict[str, Any], start: dict[str, Any], end: dict[str, Any] | None, t_end: float,
                read_s: float = 0.0) -> None:
    """Sets the step's end and its anatomy (the counters' deltas from start to end).

    ``t_read_ms`` / ``t_end_read_ms``: how long the clock reads around the counters' read took
    at each end; the counters' span lies in [dur - t_end_read_ms, dur + t_read_ms]."""
    rec["t_end"] = t_end
    rec["t_end_read_ms"] = read_s * 1e3
    rec["dur_ms"] = (t_end - rec["t_start"]) * 1e3
    rec["anatomy"] = anatomy_delta(start, end) if end is not None else None


_pending: dict[int, tuple[dict[str, Any], dict[str, Any], str | None]] = {}
_exit_registered = False


def _flush_at_exit() -> None:
    """Writes the steps still open at exit (vLLM's children end in os._exit: multiprocessing's
    finalizers run, atexit handlers do not)."""
    global _exit_registered
    if _exit_registered:
        return
    _exit_registered = True
    import atexit
    import multiprocessing.util

    atexit.register(flush_pending)
    multiprocessing.util.Finalize(None, flush_pending, exitpriority=1)


def flush_pending() -> None:
    """Writes every open step with ``t_end`` and ``anatomy`` null (its end was not seen)."""
    with _lock:
        for rec, _start, path in _pending.values():
            rec["t_end"] = rec["dur_ms"] = rec["anatomy"] = None
            _write(path, rec)
        _pending.clear()


_where_cache: dict[str, Any] | None = None


def _where() -> dict[str, Any]:
    """rank (in the replica's vLLM world: pp_rank * tp + tp_rank), tp_rank, pp_rank, replica."""
    global _where_cache
    if _where_cache is not None:
        return _where_cache
    node = envs.get("REVATI_NODE_NAME", "")
    replica: int | str = int(node[7:]) if node.startswith("replica") and node[7:].isdigit() else (node or 0)
    where: dict[str, Any] = {"rank": 0, "tp_rank": 0, "pp_rank": 0, "replica": replica}
    import sys

    ps = sys.modules.get("vllm.distributed.parallel_state")  # never imported here: tests run without vLLM
    known = False
    if ps is not None:
        try:
            if ps.model_parallel_is_initialized():
                where.update(rank=ps.get_world_group().rank_in_group, tp_rank=ps.get_tp_group().rank_in_group,
                             pp_rank=ps.get_pp_group().rank_in_group)
                known = True
        except Exception:
            pass
    if known or ps is None:
        _where_cache = where
    return where


# ---------------------------------------------------------------------------------------
# The shim's per-thread counters (step anatomy)
# ---------------------------------------------------------------------------------------

_anatomy_fns: Any = None
#: (header field names, state names), from the shim
_anatomy_layout: tuple[list[str], list[str]] = ([], [])
#: states that are the thread's own CPU work (the rest are waits or the JIT freeze)
CPU_STATES = ("run", "runner", "sched", "input")


def _anatomy() -> Any:
    global _anatomy_fns, _anatomy_layout
    if _anatomy_fns is None:
        import ctypes

        from revati.launch import shim_api

        # NOTE: the GIL is kept across these short calls: otherwise the thread would drop it
        # and wait for it again (another thread's turn, up to the GIL's 5 ms interval) between
        # the counters' read and the step's clock read that follows it.
        api = shim_api.preloaded(hold_gil=True)
        if api is None:
            _anatomy_fns = False
        else:
            head, _, states = api.revati_anatomy_fields().decode().partition(";")
            _anatomy_layout = (head.split(","), states.split(","))
            n = len(_anatomy_layout[0]) + 4 * len(_anatomy_layout[1])
            buf = (ctypes.c_int64 * n)()
            _anatomy_fns = (api.revati_thread_anatomy, buf, n, api.revati_anatomy_push, api.revati_anatomy_pop)
    return _anatomy_fns


def thread_anatomy() -> dict[str, Any] | None:
    """The calling thread's cumulative counters (ns), or None outside the time warp:
    {"now", "real", "cpu", "cpu_frozen", "gpu_busy", "gpu_work", "lost", "states": {name: [v, busy, real, n]}}."""
    fns = _anatomy()
    if not fns:
        return None
    read, buf, n, _, _ = fns
    if read(buf, n) != n:
        return None
    head, names = _anatomy_layout
    vals = list(buf)
    out: dict[str, Any] = dict(zip(head, vals))
    k = len(head)
    out["states"] = {name: vals[k + 4 * i:k + 4 * i + 4] for i, name in enumerate(names)}
    return out


def anatomy_state(name: str) -> int:
    """The shim's index of a state (see CPU_STATES and revati_anatomy_fields), or -1."""
    if not _anatomy():
        return -1
    names = _anatomy_layout[1]
    return names.index(name) if name in names else -1


def anatomy_push(state: int) -> None:
    fns = _anatomy()
    if fns and state >= 0:
        fns[3](state)


def anatomy_pop(state: int) -> None:
    fns = _anatomy()
    if fns and state >= 0:
        fns[4](state)


def anatomy_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The anatomy of the span between two snapshots of one thread's counters (ms)."""
    ms: dict[str, float] = {}
    gpu: dict[str, float] = {}
    cpu_v = cpu_r = 0
    entries: dict[str, int] = {}
    for name, (v1, b1, r1, n1) in b["states"].items():
        v0, b0, r0, n0 = a["states"].get(name, (0, 0, 0, 0))
        dv, db = v1 - v0, b1 - b0
        if dv:
            ms[name] = dv / 1e6
        if db:
            gpu[name] = db / 1e6
        if n1 - n0:
            entries[name] = n1 - n0
        if name in CPU_STATES:
            cpu_v += dv
            cpu_r += r1 - r0
    # CPU inside JIT freezes took about no virtual time; the rest is the CPU states' work.
    cpu_real = (b["cpu"] - b.get("cpu_frozen", 0)) - (a["cpu"] - a.get("cpu_frozen", 0))
    # The thread's CPU time in virtual ns, at the rate the clock ran while it ran (dilation,
    # the contention governor): what its CPU work added to the step.
    cpu_virtual = cpu_real * (cpu_v / cpu_r) if cpu_r > 0 else 0.0
    sidecar = b["states"].get("sidecar", [0] * 4)
    frozen = b["states"].get("frozen", [0] * 4)
    sidecar0 = a["states"].get("sidecar", [0] * 4)
    frozen0 = a["states"].get("frozen", [0] * 4)
    return {
        "ms": ms,
        "gpu_ms": gpu,
        "gpu_busy_ms": (b["gpu_busy"] - a["gpu_busy"]) / 1e6,
        "gpu_work_ms": (b["gpu_work"] - a["gpu_work"]) / 1e6,
        "cpu_ms": cpu_virtual / 1e6,
        "cpu_real_ms": cpu_real / 1e6,
        "untracked_ms": (cpu_v - cpu_virtual) / 1e6,
        "real_ms": (b["real"] - a["real"]) / 1e6,
        "sidecar_requests": sidecar[3] - sidecar0[3],
        "sidecar_real_ms": (sidecar[2] - sidecar0[2]) / 1e6,
        "freezes": frozen[3] - frozen0[3],
        "frozen_real_ms": (frozen[2] - frozen0[2]) / 1e6,
        "entries": entries,
    }


_shim_fns: Any = None


def _shim() -> Any:
    """The shim's revati_set_model / revati_set_step, or False outside the emulator."""
    global _shim_fns
    if _shim_fns is None:
        from revati.launch import shim_api

        _shim_fns = shim_api.preloaded() or False
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
    moe = moe_layout(hf, tp, int(getattr(pc, "data_parallel_size", 1) or 1),
                     bool(getattr(pc, "enable_expert_parallel", False)),
                     getattr(mc.hf_config, "quantization_config", None) or getattr(mc, "quantization", None))
    if moe is not None:
        lib.revati_set_moe(*moe)
    mla = mla_layout(hf)
    if mla is not None:
        lib.revati_set_mla(*mla)
    runner._revati_model_sent = True


def mla_layout(hf: Any) -> tuple[int, int, int, int] | None:
    """A DeepSeek-style MLA model's latent layout, from its config: (kv_lora_rank,
    qk_rope_head_dim, qk_nope_head_dim, v_head_dim), or None for another attention."""
    vals = [getattr(hf, f, None) for f in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                                           "v_head_dim")]
    if not all(isinstance(v, int) and v > 0 for v in vals):
        return None
    return tuple(vals)  # type: ignore[return-value]


# The config fields that name a MoE model's routed experts, per architecture family (Mixtral and
# Llama 4: num_local_experts; Qwen2/3-MoE: num_experts; DeepSeek V2/V3 and GLM: n_routed_experts).
_EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def moe_layout(hf: Any, tp: int, dp: int = 1, expert_parallel: bool = False,
               quantization: Any = None) -> tuple[int, ...] | None:
    """The routed experts of one GPU, from the model's config: (experts on this GPU, experts in
    all, top-k, each expert's intermediate size on this GPU, bytes of one weight), or None for a
    dense model (quantization: the top-level config's, when the text config has none). Without
    expert parallelism every GPU holds every expert, its intermediate split
    over TP (vLLM's FusedMoE); with it the experts are split over TP x DP, each whole."""
    total = next((int(v) for f in _EXPERT_FIELDS if isinstance(v := getattr(hf, f, None), int) and v > 1), None)
    topk = getattr(hf, "num_experts_per_tok", None) or getattr(hf, "moe_topk", None)
    if total is None or not topk:
        return None
    inter = getattr(hf, "moe_intermediate_size", None) or getattr(hf, "intermediate_size", None)
    if not inter:
        return None
    q = getattr(hf, "quantization_config", None) or quantization
    qs = str(q).lower() if q else ""
    weight_bytes = 1 if ("fp8" in qs or "float8" in qs or "float-quantized" in qs) else 2
    if expert_parallel:
        ep = max(1, tp * dp)
        return max(1, total // ep), total, int(topk), int(inter), weight_bytes
    return total, total, int(topk), max(1, int(inter) // tp), weight_bytes


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
    global _step_counter, _log_fd, _log_path, _where_cache
    with _lock:
        STEP_RING.clear()
        _pending.clear()
        _where_cache = None
        _step_counter = 0
        if _log_fd is not None:
            try:
                os.close(_log_fd)
            except OSError:
                pass
        _log_fd = None
        _log_path = None
