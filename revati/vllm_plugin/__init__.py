"""revati's vLLM general plugin: the *semantic layer*.

Under the emulator no GPU kernel executes, so every value the host reads back that a
kernel should have computed is wrong (zeros or stale memory). This plugin patches vLLM
(0.32, V2 model runner) in the processes that run the model so that the engine sees what
a real GPU would have produced:

* sampled token ids: drawn deterministically (``REVATI_SEED``, request id, position)
  from the non-special vocabulary; never EOS, special or stop ids. Requests therefore
  always run to ``max_tokens`` (ignore_eos or not);
* ``num_sampled`` / ``num_rejected``: 1/0 per request per step, 0/0 on partial
  chunked-prefill steps, accepted+1 with spec decode (``REVATI_SPEC_ACCEPTANCE``);
* ``num_nans`` = 0 and plausible logprobs when requested;

and it reports every model step's batch composition to :func:`step_hook`.

vLLM calls :func:`register` (entry point ``vllm.general_plugins: revati``) in every
process: API server, engine core and workers. It does nothing unless the emulator is
active (``REVATI_ACTIVE=1``, set by the shim launcher), and it is idempotent. See
docs/vllm-semantic-layer.md.
"""

from __future__ import annotations

import os
import threading

from revati import envs
from revati.vllm_plugin.steps import STEP_RING, step_hook

__all__ = ["register", "is_active", "step_hook", "STEP_RING", "seam_status"]

_registered = False
_lock = threading.Lock()


def is_active() -> bool:
    return envs.get("REVATI_ACTIVE", "").strip().lower() in ("1", "true", "yes", "on")


def register() -> None:
    """vLLM general-plugin entry point."""
    global _registered
    if not is_active():
        return
    with _lock:
        if _registered:
            return
        from revati.vllm_plugin import patches

        patches.install()
        _flush_shim_at_exit()
        _freeze_clock_during_jit()
        _registered = True


def _flush_shim_at_exit() -> None:
    """Makes the shim write its stats and trace when this process ends.

    vLLM's engine core and workers are multiprocessing children, which end in os._exit(): no
    atexit handlers, no library destructors, so the shim's exit-time write never happens and
    the run's last second of figures would be lost. multiprocessing runs its finalizers first.
    """
    import atexit
    import multiprocessing.util

    from revati.launch import shim_api

    api = shim_api.preloaded()
    if api is None:
        return
    flush = api.revati_flush
    atexit.register(flush)
    multiprocessing.util.Finalize(None, flush, exitpriority=0)


def _freeze_clock_during_jit() -> None:
    """Stops the deployment's virtual clock while Triton compiles (or loads from its disk
    cache) a kernel this process has not used yet.

    A warmed-up GPU server has every kernel variant in memory; here the first request of a
    batch shape can compile ~20 of vLLM's Triton kernels (input preparation, sampling) on this
    CPU, seconds each on a cold cache, and under the time warp that CPU time would land in the
    request's TTFT (8.7 s instead of 1.0 s median for a small Llama-3.1-8B run). The shim's
    revati_clock_freeze tells the Timekeeper; the report counts the freezes.
    REVATI_FREEZE_JIT=0 turns it off (to measure a cold server's first requests).
    """
    import functools

    from revati.launch import shim_api

    if envs.get("REVATI_FREEZE_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return

    api = shim_api.preloaded()
    if api is None:
        return
    try:
        from triton.compiler.compiler import CompiledKernel
        from triton.runtime.jit import JITFunction
    except ImportError:
        return
    freeze = api.revati_clock_freeze

    def frozen_during(cls, name: str, first_use=lambda self: True) -> None:
        orig = getattr(cls, name)
        if getattr(orig, "_revati_freeze", False):
            return

        @functools.wraps(orig)
        def wrapper(self, *args, **kwargs):
            frozen = first_use(self) and freeze(1) == 0  # -1: no time warp, nothing to undo
            try:
                return orig(self, *args, **kwargs)
            finally:
                if frozen:
                    freeze(-1)

        wrapper._revati_freeze = True
        setattr(cls, name, wrapper)

    # a kernel's first call in this process: its argument binder is generated and exec'ed
    frozen_during(JITFunction, "create_binder")
    # a variant missing from this process's kernel cache: compiled, or loaded from disk
    frozen_during(JITFunction, "_do_compile")
    # its first launch: the launcher is built and the binary loaded into the (virtual) GPU
    frozen_during(CompiledKernel, "_init_handles", lambda k: k.module is None)


def seam_status() -> dict[str, str]:
    """Seam name -> "patched" | "pending" | "missing: ..." (for diagnostics)."""
    from revati.vllm_plugin import patches

    return dict(patches.SEAM_STATUS)
