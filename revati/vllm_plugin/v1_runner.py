"""The semantic layer's seams in vLLM's V1 model runner (vllm/v1/worker/gpu_model_runner.py),
the default runner up to the 0.2x releases (vLLM 0.15.1 here; revati/engines/vllm.py names the
version ranges).

What differs from the V2 runner (patches.py):

* The host decides how many tokens each request gets (its ``discard_request_mask`` drops partial
  prefills), so ``num_sampled`` needs nothing; only the sampled token *ids* are kernel outputs
  read back (zeros or stale memory here).
* The ids reach the host in one of two places: ``GPUModelRunner._to_list`` (synchronous
  scheduling: a pinned copy, an event sync, ``tolist``) or ``AsyncGPUModelRunnerOutput.get_output``
  (async scheduling, the default: the copy stream's ``sampled_token_ids_cpu``). Both are replaced
  by the same draw as V2's (tokens.py: request id, position, seed), computed in
  ``_bookkeeping_sync`` from the host's ``num_tokens_no_spec`` (the position the token goes to).
* The batch composition comes from ``_prepare_inputs`` (host arrays: scheduled and computed
  tokens, prompt lengths), completed with the cudagraph-padded token count that
  ``_determine_batch_execution_and_padding`` returns right after; it is reported there, before the
  forward's kernels. ``_dummy_run`` calls the latter too, but never ``_prepare_inputs``: dummy,
  profile and capture runs are not reported.

Spec decode on V1 (``max_gen_len > 1``) is not covered: the rejection sampler's output is left
as the kernels left it, with a warning.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

import numpy as np

from revati.vllm_plugin import steps, tokens
from revati.vllm_plugin.marks import _mark, _warn_once, runner_policy

_pending = threading.local()  # the last _bookkeeping_sync's tokens, for the async output built next


def _stop_ids(runner, req_ids: list[str]) -> list[frozenset[int] | None]:
    out: list[frozenset[int] | None] = []
    for rid in req_ids:
        state = runner.requests.get(rid) if rid is not None else None
        sp = getattr(state, "sampling_params", None)
        ids = set(getattr(sp, "stop_token_ids", None) or ()) | set(getattr(sp, "all_stop_token_ids", None) or ())
        out.append(frozenset(int(i) for i in ids) if ids else None)
    return out


def draw_tokens(runner, num_rows: int) -> np.ndarray:
    """The ids a real sampler would have returned for the first num_rows requests: [num_rows, 1]."""
    ib = runner.input_batch
    req_ids = list(ib.req_ids[:num_rows])
    keys = np.array([tokens.request_key(r) for r in req_ids], dtype=np.uint64)
    positions = np.asarray(ib.num_tokens_no_spec[:num_rows], dtype=np.int64).copy()
    drawn = runner_policy(runner).draw(tokens.seed_from_env(), keys, positions, _stop_ids(runner, req_ids))
    return drawn.astype(np.int64).reshape(num_rows, 1)


def wrap_bookkeeping_sync(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def _bookkeeping_sync(self, scheduler_output, sampler_output, *args, **kwargs):
        self.__dict__["_revati_tokens"] = None
        _pending.tokens = None
        try:
            sampled = sampler_output.sampled_token_ids
            if sampled.shape[-1] == 1:
                drawn = draw_tokens(self, int(sampled.shape[0]))
                self.__dict__["_revati_tokens"] = drawn
                _pending.tokens = drawn
            else:
                _warn_once("v1_spec", "revati: speculative decoding on vLLM's V1 model runner is not covered: "
                           "the rejection sampler's token ids are read as the kernels left them")
        except Exception:
            _warn_once("v1_tokens", "revati: drawing the sampled token ids failed; the engine reads kernel "
                       "outputs that never ran", exc=True)
        return orig(self, scheduler_output, sampler_output, *args, **kwargs)

    return _mark(_bookkeeping_sync, orig)


def wrap_to_list(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def _to_list(self, sampled_token_ids, *args, **kwargs):
        result = orig(self, sampled_token_ids, *args, **kwargs)  # the copy and its sync still happen
        drawn = self.__dict__.pop("_revati_tokens", None)
        if drawn is not None and len(result) == drawn.shape[0]:
            return drawn.tolist()
        return result

    return _mark(_to_list, orig)


def wrap_async_output_init(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        self._revati_tokens = getattr(_pending, "tokens", None)
        _pending.tokens = None

    return _mark(__init__, orig)


def wrap_async_get_output(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def get_output(self, *args, **kwargs):
        drawn = getattr(self, "_revati_tokens", None)
        if drawn is not None:
            try:
                # The D2H copy (of kernel outputs that never ran) must land first, or it would
                # overwrite ours; the host tensor is also what later steps read for penalties.
                self.async_copy_ready_event.synchronize()
                host = self.sampled_token_ids_cpu.numpy()
                if host.ndim == 2 and host.shape[0] == drawn.shape[0] and host.shape[1] == 1:
                    host[:, :] = drawn
                else:
                    _warn_once("v1_async_shape", "revati: sampled ids of shape %s not understood; left as-is",
                               host.shape)
            except Exception:
                _warn_once("v1_get_output", "revati: applying sampled tokens failed", exc=True)
        return orig(self, *args, **kwargs)

    return _mark(get_output, orig)


def batch_from_v1(runner, scheduler_output, num_scheduled_tokens_np) -> dict[str, Any]:
    """The step dict (docs/vllm-semantic-layer.md) from a V1 runner's host state before the step."""
    ib = runner.input_batch
    n = int(ib.num_reqs)
    query = np.asarray(num_scheduled_tokens_np[:n], dtype=np.int64)
    context = np.asarray(ib.num_computed_tokens_cpu[:n], dtype=np.int64)
    prompt = np.asarray(ib.num_prompt_tokens[:n], dtype=np.int64)
    is_prefill = context < prompt
    spec = getattr(scheduler_output, "scheduled_spec_decode_tokens", None) or {}
    num_prefill = int(is_prefill.sum())
    return {
        "num_reqs": n,
        "num_tokens": int(query.sum()),
        "num_prefill": num_prefill,
        "num_decode": n - num_prefill,
        "query_lens": query.tolist(),
        "seq_lens": (context + query).tolist(),
        "context_lens": context.tolist(),
        "num_tokens_padded": int(query.sum()),
        "num_draft_tokens": int(sum(len(v) for v in spec.values())),
        "num_prefill_as_decode": int((is_prefill & (query <= 1)).sum()),
    }


def wrap_prepare_inputs(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens_np, *args, **kwargs):
        try:
            self.__dict__["_revati_batch"] = batch_from_v1(self, scheduler_output, num_scheduled_tokens_np)
        except Exception:
            self.__dict__["_revati_batch"] = None
            _warn_once("step_hook", "revati: step hook failed (batch composition not reported)", exc=True)
        return orig(self, scheduler_output, num_scheduled_tokens_np, *args, **kwargs)

    return _mark(_prepare_inputs, orig)


def wrap_padding(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def _determine_batch_execution_and_padding(self, *args, **kwargs):
        result = orig(self, *args, **kwargs)
        batch = self.__dict__.pop("_revati_batch", None)
        if batch is not None:  # a real step (a dummy run never prepares inputs)
            try:
                desc = result[1]
                padded = getattr(desc, "num_tokens", None)
                if padded:
                    batch["num_tokens_padded"] = int(padded)
                from revati import vllm_plugin

                steps.send_model_to_shim(self)
                vllm_plugin.step_hook(batch)
            except Exception:
                _warn_once("step_hook", "revati: step hook failed (batch composition not reported)", exc=True)
        return result

    return _mark(_determine_batch_execution_and_padding, orig)
