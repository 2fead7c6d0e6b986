"""The seams of SGLang (0.5.23, sglang.srt) that the semantic layer wraps.

* `Scheduler.process_batch_result` (sglang/srt/managers/scheduler.py): every generation
  result passes here, in the scheduler process of each TP rank, before its
  `next_token_ids` are read on the host (`.tolist()` in batch_result_processor.py). The
  wrapper replaces them with drawn ids (a host tensor), so the later wait on the result's
  D2H copy (`copy_done`) and the read see the stand-ins. Required.
* `ModelRunner.forward` (sglang/srt/model_executor/model_runner.py): every forward pass
  (eager, CUDA-graph replay, capture) of each TP rank; its ForwardBatch carries the host
  copies of the batch composition (`seq_lens_cpu`, `extend_seq_lens_cpu`). Required.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import logging
import threading
from typing import Any

import numpy as np

logger = logging.getLogger("revati.sglang")


class MissingSeamError(RuntimeError):
    """An SGLang internal that the semantic layer wraps is not where it was."""


SEAMS = {
    "sampled_ids": ("sglang.srt.managers.scheduler", "Scheduler", "process_batch_result"),
    "batch_composition": ("sglang.srt.model_executor.model_runner", "ModelRunner", "forward"),
}
SEAM_STATUS: dict[str, str] = {}
_warned: set[str] = set()
_lock = threading.Lock()


def _warn_once(key: str, msg: str, exc: bool = False) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(msg, exc_info=exc)


def _resolve(seam: str):
    module, cls_name, attr = SEAMS[seam]
    try:
        cls = getattr(importlib.import_module(module), cls_name)
        orig = getattr(cls, attr)
    except (ImportError, AttributeError) as e:
        raise MissingSeamError(f"revati: SGLang seam {module}.{cls_name}.{attr} is missing ({e}); this SGLang "
                               f"is not one the semantic layer knows (revati/sglang_plugin/patches.py)") from None
    return cls, attr, orig


def _wrap(seam: str, make) -> None:
    cls, attr, orig = _resolve(seam)
    if getattr(orig, "_revati_seam", False):
        return
    wrapper = functools.wraps(orig)(make(orig))
    wrapper._revati_seam = True
    setattr(cls, attr, wrapper)
    SEAM_STATUS[seam] = "patched"


# ---------------------------------------------------------------------------------------
# sampled token ids
# ---------------------------------------------------------------------------------------


def _policy(scheduler: Any):
    """The scheduler's token policy (built once per scheduler): its tokenizer's plain words,
    minus EOS and every special id."""
    pol = getattr(scheduler, "_revati_policy", None)
    if pol is not None:
        return pol
    from revati.vllm_plugin import tokens

    mc = scheduler.model_config
    hf = getattr(mc, "hf_config", None)
    eos: set[int] = set()
    special: set[int] = set()
    for cfg in (hf, getattr(mc, "hf_text_config", None)):
        if cfg is None:
            continue
        eos.update(tokens._as_id_list(getattr(cfg, "eos_token_id", None)))
        for a in ("bos_token_id", "pad_token_id", "decoder_start_token_id"):
            special.update(tokens._as_id_list(getattr(cfg, a, None)))
    eos.update(tokens._as_id_list(list(getattr(mc, "hf_eos_token_id", None) or [])))
    pol = tokens.build_policy(int(mc.vocab_size), tokenizer=getattr(scheduler, "tokenizer", None),
                              eos_ids=eos, special_ids=special)
    logger.info("revati: sampled ids are drawn from %d ids (%s)", len(pol.allowed), pol.source)
    scheduler._revati_policy = pol
    return pol


def draw_ids(scheduler: Any, reqs: list) -> np.ndarray:
    """One stand-in token per request: at the position of its next token."""
    from revati.vllm_plugin import tokens

    pol = _policy(scheduler)
    keys = np.fromiter((tokens.request_key(str(r.rid)) for r in reqs), dtype=np.uint64, count=len(reqs))
    pos = np.fromiter((len(r.origin_input_ids) + len(r.output_ids) for r in reqs), dtype=np.int64, count=len(reqs))
    bans = []
    for r in reqs:
        ban = set(tokens._as_id_list(getattr(r, "eos_token_ids", None) and list(r.eos_token_ids)))
        sp = getattr(r, "sampling_params", None)
        ban.update(tokens._as_id_list(list(getattr(sp, "stop_token_ids", None) or [])))
        bans.append(frozenset(ban) if ban else None)
    return pol.draw(tokens.seed_from_env(), keys, pos, bans)


def _sampled_ids(orig):
    import torch

    def process_batch_result(self, batch, result, *args, **kwargs):
        try:
            ids = getattr(result, "next_token_ids", None)
            mode = batch.forward_mode
            if isinstance(ids, torch.Tensor) and (mode.is_decode() or mode.is_extend()) and batch.reqs:
                if not batch.spec_algorithm.is_none():
                    _warn_once("spec", "revati: speculative decoding under SGLang is not covered: its accepted "
                                       "drafts are not drawn (the ids read back are the kernels' stale memory)")
                elif ids.numel() == len(batch.reqs):
                    result.next_token_ids = torch.from_numpy(draw_ids(self, batch.reqs)).to(ids.dtype)
                else:
                    _warn_once("shape", f"revati: {ids.numel()} sampled ids for {len(batch.reqs)} requests; "
                                        "left as read back")
        except Exception:
            _warn_once("draw", "revati: drawing the sampled ids failed (ids left as read back)", exc=True)
        return orig(self, batch, result, *args, **kwargs)

    return process_batch_result


# ---------------------------------------------------------------------------------------
# batch composition
# ---------------------------------------------------------------------------------------


def send_model_to_shim(runner: Any) -> None:
    """Hands the per-GPU attention and MLP shape to the shim, once per ModelRunner."""
    from revati.vllm_plugin import steps

    lib = steps._shim()
    if not lib or getattr(runner, "_revati_model_sent", False):
        return
    mc = runner.model_config
    tp = int(getattr(runner, "tp_size", 1) or 1)
    hf = getattr(mc, "hf_text_config", None) or mc.hf_config
    heads = int(mc.num_attention_heads) // tp
    kv = int(mc.get_num_kv_heads(tp))
    inter = getattr(hf, "intermediate_size", None) or 4 * int(mc.hidden_size)
    lib.revati_set_model(heads, kv, int(mc.head_dim), int(mc.hidden_size), int(inter) // tp)
    moe = steps.moe_layout(hf, tp, 1, False, getattr(mc.hf_config, "quantization_config", None))
    if moe is not None:
        lib.revati_set_moe(*moe)
    mla = steps.mla_layout(hf)
    if mla is not None:
        lib.revati_set_mla(*mla)
    runner._revati_model_sent = True


def _padded_decode(runner: Any, bs: int) -> int:
    """The batch size a decode CUDA graph replays for bs requests (bs when none fits)."""
    g = getattr(runner, "decode_cuda_graph_runner", None)
    sizes = sorted(getattr(g, "capture_bs", None) or [])
    i = bisect.bisect_left(sizes, bs)
    return sizes[i] if i < len(sizes) else bs


def batch_from_forward_batch(runner: Any, fb: Any) -> dict[str, Any] | None:
    """The step dict of revati.vllm_plugin.steps from a ForwardBatch (host copies only); None
    for a pass without requests (idle)."""
    mode = fb.forward_mode
    n = int(fb.batch_size or 0)
    if n <= 0 or mode.is_idle():
        return None
    if fb.seq_lens_cpu is None:
        return None
    seq = np.asarray(fb.seq_lens_cpu[:n], dtype=np.int64)
    if mode.is_extend() and fb.extend_seq_lens_cpu is not None:
        query = np.asarray(list(fb.extend_seq_lens_cpu)[:n], dtype=np.int64)
    else:
        query = np.ones(n, dtype=np.int64)
    num_tokens = int(query.sum())
    pre = query > 1
    padded = _padded_decode(runner, n) if mode.is_decode() else num_tokens
    return {"num_reqs": n, "num_tokens": num_tokens, "num_prefill": int(pre.sum()), "num_decode": int((~pre).sum()),
            "query_lens": query.tolist(), "seq_lens": seq.tolist(), "context_lens": (seq - query).tolist(),
            "num_tokens_padded": max(padded, num_tokens), "num_draft_tokens": 0, "num_prefill_as_decode": 0}


def _batch_composition(orig):
    def forward(self, forward_batch, *args, **kwargs):
        try:
            send_model_to_shim(self)
            batch = batch_from_forward_batch(self, forward_batch)
            if batch is not None:
                from revati import vllm_plugin

                vllm_plugin.step_hook(batch)
        except Exception:
            _warn_once("step", "revati: step hook failed (batch composition not reported)", exc=True)
        return orig(self, forward_batch, *args, **kwargs)

    return forward


def use_aot_norm_kernels() -> None:
    """sgl_kernel's norms (rmsnorm, fused_add_rmsnorm, ...) call FlashInfer's when FlashInfer
    imports (`sgl_kernel.elementwise._has_flashinfer`); this turns them to sgl_kernel's own
    precompiled kernels.

    NOTE: FlashInfer 0.7's norms on sm_90 are CuTe-DSL kernels, compiled at first use with a
    static CUDA runtime (nvidia_cutlass_dsl's libcuda_dialect_runtime_static.a). That runtime
    reaches the driver only through cuGetExportTable's undocumented tables, which the shim
    cannot stand in for ("cudaErrorNotSupported" in cuda_dialect_init_library_once). Its
    CUDA fallback (FLASHINFER_USE_CUDA_NORM=1) is a JIT build with nvcc at start-up that also
    needs the cuBLAS headers. sgl_kernel's kernels compute the same norms over the same bytes
    (the shim's norm family describes them alike).
    """
    import sgl_kernel.elementwise as elementwise

    if getattr(elementwise, "_has_flashinfer", None) is None:
        raise MissingSeamError("revati: sgl_kernel.elementwise._has_flashinfer is missing: this sgl-kernel's norms "
                               "may call FlashInfer's CuTe-DSL kernels, which the shim cannot run "
                               "(revati/sglang_plugin/patches.py use_aot_norm_kernels)")
    elementwise._has_flashinfer = False
    SEAM_STATUS["aot_norms"] = "patched"


def install() -> None:
    """Wraps every seam; raises MissingSeamError for one this SGLang lacks."""
    with _lock:
        use_aot_norm_kernels()
        _wrap("sampled_ids", _sampled_ids)
        _wrap("batch_composition", _batch_composition)
