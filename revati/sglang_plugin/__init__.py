"""revati's SGLang general plugin: the semantic layer for SGLang (sglang.srt), the counterpart
of revati/vllm_plugin.

SGLang loads every `sglang.srt.plugins` entry point in each of its processes
(sglang/srt/plugins/__init__.py: load_plugins(), called by launch_server, by each scheduler
process, one per TP rank, and by the detokenizer). :func:`register` is revati's entry
(pyproject.toml). It does nothing unless the emulator is active (REVATI_ACTIVE=1, set by the
shim launcher), and it is idempotent. Under the emulator it:

* replaces the sampled token ids that the scheduler reads back (kernels never ran: zeros or
  stale memory) with ids drawn as for vLLM (revati/vllm_plugin/tokens.py: deterministic per
  request and position, never EOS, a special token or a request's stop id), so requests run
  exactly to max_new_tokens (`max_tokens`), with or without ignore_eos;
* reports each forward pass's batch composition (ForwardBatch's host copies) to the shim, so
  that attention and the per-token kernels are predicted from it;
* freezes the clock while Triton compiles, and flushes the shim's stats at process exit (the
  same helpers as the vLLM plugin).

A required seam that this SGLang lacks stops the process with MissingSeamError naming it,
rather than emulating with read-backs that never ran.
"""

from __future__ import annotations

import threading

from revati.vllm_plugin import is_active  # one switch for both engines' semantic layers

__all__ = ["register", "is_active"]

_registered = False
_lock = threading.Lock()


def register() -> None:
    """SGLang general-plugin entry point (group `sglang.srt.plugins`)."""
    global _registered
    if not is_active():
        return
    with _lock:
        if _registered:
            return
        from revati import vllm_plugin
        from revati.sglang_plugin import patches

        patches.install()
        # NOTE: engine-neutral helpers of the vLLM plugin (the shim's exit flush for
        # multiprocessing children, the Triton-JIT clock freeze); one copy for both engines.
        vllm_plugin._flush_shim_at_exit()
        vllm_plugin._freeze_clock_during_jit()
        _flush_shim_on_sigterm()
        _registered = True


def _flush_shim_on_sigterm() -> None:
    """Writes the shim's stats when SIGTERM ends a process that left SIGTERM at its default.

    SGLang's scheduler and detokenizer processes die of a SIGTERM to the process group (the
    way `revati exec` and revati run stop a server) with no Python-level handler, so neither
    atexit nor multiprocessing's finalizers run, and their shim never writes its stats (the
    report's GPU figures). A handler that flushes and then dies of the same signal keeps
    the exit status. A process that installs its own handler later (launch_server's) replaces
    this one.
    """
    import os
    import signal
    import threading

    from revati.launch import shim_api

    api = shim_api.preloaded()
    if api is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum, _frame):
        try:
            api.revati_flush()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
