"""The seams in vLLM that the semantic layer wraps, one set per layer: "v2" (the V2 model runner,
the default in 0.32 and 0.33; below) and "v1" (the V1 model runner of 0.15; v1_runner.py).
revati/engines/vllm.py names the layer of each version range; a version in no range, or a
required seam missing from the version's modules, stops the engine with a message naming it
(MissingSeamError): an emulation that reads kernel outputs that never ran must not go on.

Every seam is a method on a class, so the patch holds however other modules imported
the class. Patches are applied when the target module is first imported (a post-import
hook), or at once if it already is, so processes that never load the model runner (the
API server) pay nothing. A missing optional seam (the step anatomy's) is logged at debug level.

Seams (vllm/v1/worker/gpu/ is the V2 model runner, the default in 0.32):

* ``model_runner.GPUModelRunner.prepare_inputs`` -> after it returns the InputBatch,
  publish the batch composition (:func:`revati.vllm_plugin.step_hook`).
* ``model_runner.GPUModelRunner.add_requests`` -> remember each new request's stop
  token ids (never emitted), forget finished ones.
* ``model_runner.GPUModelRunner.sample`` -> compute on the host what the sampler and the
  ``get_num_sampled_and_rejected`` kernel would have produced; attach it to the
  SamplerOutput.
* ``async_utils.AsyncOutput.get_output`` -> after the D2H copy event, overwrite the
  host copies (sampled ids, num_sampled, num_nans, logprobs) before vLLM turns them
  into the ModelRunnerOutput the scheduler reads.
* ``vllm.v1.worker.gpu_model_runner.GPUModelRunner.__init__`` (the V1 runner) -> warn:
  not covered.
* step anatomy (optional): ``GPUModelRunner.execute_model`` / ``sample_tokens``,
  ``Scheduler.schedule`` / ``update_from_output`` and ``EngineCoreProc._process_input_queue``
  tell the shim which part of vLLM the thread is in (runner, sched, idle or input), so that a
  step's CPU time splits by component and the engine's idle wait (a blocking queue get the
  shim does not see) is not counted as CPU (:mod:`revati.vllm_plugin.steps`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from revati.vllm_plugin import semantics, steps, tokens
from revati.vllm_plugin.marks import MARK, _mark, _warn_once, logger, runner_policy  # noqa: F401




@dataclass
class Seam:
    module: str
    qualname: str  # "Class.method"
    make: Callable[[Callable], Callable]
    required: bool = True  # a missing required seam is a warning; optional is debug

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}"


#: name -> "patched" | "missing: why" | "pending" (module not imported yet)
SEAM_STATUS: dict[str, str] = {}




# ---------------------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------------------


def _wrap_prepare_inputs(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def prepare_inputs(self, *args, **kwargs):
        input_batch = orig(self, *args, **kwargs)
        try:
            from revati import vllm_plugin

            steps.send_model_to_shim(self)
            vllm_plugin.step_hook(steps.batch_from_input_batch(input_batch))
        except Exception:
            _warn_once("step_hook", "revati: step hook failed (batch composition not reported)", exc=True)
        return input_batch

    return _mark(prepare_inputs, orig)


def _wrap_add_requests(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def add_requests(self, scheduler_output, *args, **kwargs):
        try:
            stops: dict[str, frozenset[int]] = self.__dict__.setdefault("_revati_stop_ids", {})
            for req_id in getattr(scheduler_output, "finished_req_ids", ()) or ():
                stops.pop(req_id, None)
            for new in getattr(scheduler_output, "scheduled_new_reqs", ()) or ():
                sp = getattr(new, "sampling_params", None)
                if sp is None:
                    continue
                ids = set(getattr(sp, "stop_token_ids", None) or ())
                ids |= set(getattr(sp, "all_stop_token_ids", None) or ())
                if ids:
                    stops[new.req_id] = frozenset(int(i) for i in ids)
                else:
                    stops.pop(new.req_id, None)
        except Exception:
            _warn_once("add_requests", "revati: could not record stop token ids", exc=True)
        return orig(self, scheduler_output, *args, **kwargs)

    return _mark(add_requests, orig)




def _wrap_sample(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def sample(self, hidden_states, input_batch, *args, **kwargs):
        result = orig(self, hidden_states, input_batch, *args, **kwargs)
        try:
            sampler_output = result[0]
            shape = tuple(sampler_output.sampled_token_ids.shape)
            width = shape[1] if len(shape) == 2 else 1
            ov = semantics.compute_override(
                input_batch,
                width,
                runner_policy(self),
                tokens.seed_from_env(),
                self.__dict__.get("_revati_stop_ids"),
                semantics.spec_acceptance_from_env(),
            )
            sampler_output._revati_override = ov
        except Exception:
            _warn_once(
                "sample",
                "revati: computing sampled tokens / num_sampled failed; the engine will "
                "read kernel outputs that never ran (zeros or stale)",
                exc=True,
            )
        return result

    return _mark(sample, orig)


def apply_override(async_output, ov: semantics.SampleOverride) -> None:
    """Overwrite the host copies held by a V2 ``AsyncOutput`` (after its copy event)."""
    n = ov.num_reqs
    st = getattr(async_output, "sampled_token_ids", None)
    if isinstance(st, np.ndarray) and st.ndim == 2 and st.shape[0] >= n and st.shape[1] == ov.tokens.shape[1] and st.flags.writeable:
        st[:n] = ov.tokens
        st[n:] = 0
    else:
        async_output.sampled_token_ids = ov.tokens.copy()
    ns = getattr(async_output, "num_sampled_tokens_np", None)
    if isinstance(ns, np.ndarray) and ns.ndim == 1 and ns.shape[0] >= n and ns.flags.writeable:
        # In place: the aux-output connector holds a reference to this array.
        ns[:n] = ov.num_sampled
        ns[n:] = 0
    else:
        async_output.num_sampled_tokens_np = ov.num_sampled.copy()
    nans = getattr(async_output, "num_nans", None)
    if isinstance(nans, np.ndarray) and nans.flags.writeable:
        nans[...] = 0
    lp = getattr(async_output, "logprobs_tensors", None)
    if lp is not None:
        _fill_logprobs(lp, ov)


def _fill_logprobs(lp, ov: semantics.SampleOverride) -> None:
    ids = lp.logprob_token_ids.numpy()
    vals = lp.logprobs.numpy()
    ranks = lp.selected_token_ranks.numpy()
    rows = ids.shape[0]
    if rows == ov.num_reqs:
        chosen = ov.tokens[:, 0]
    elif rows == ov.tokens.size:
        chosen = ov.tokens.reshape(-1)
    else:
        _warn_once("logprobs", "revati: logprobs layout (%d rows) not understood; left as-is", rows)
        return
    policy = ov.policy
    ids[:, 0] = chosen
    vals[:, 0] = -0.25
    if ids.shape[1] > 1:
        ids[:, 1] = chosen  # the sampled token is the most likely one
        vals[:, 1] = -0.25
        for c in range(2, ids.shape[1]):
            if policy is not None:
                pos = np.searchsorted(policy.allowed, chosen)
                ids[:, c] = policy.allowed[(pos + 7919 * (c - 1)) % len(policy.allowed)]
            else:
                ids[:, c] = chosen
            vals[:, c] = -1.0 - c
    ranks[...] = 1


def _wrap_get_output(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def get_output(self, *args, **kwargs):
        ov = getattr(getattr(self, "sampler_output", None), "_revati_override", None)
        if ov is not None:
            try:
                # The D2H copies (of kernel outputs that never ran) must land first,
                # or they would overwrite ours.
                self.copy_event.synchronize()
                apply_override(self, ov)
            except Exception:
                _warn_once("get_output", "revati: applying sampled tokens failed", exc=True)
        return orig(self, *args, **kwargs)

    return _mark(get_output, orig)


def _wrap_phase(state_name: str) -> Callable[[Callable], Callable]:
    """A wrapper that accounts the call's time to a state of the step anatomy."""

    def make(orig: Callable) -> Callable:
        @functools.wraps(orig)
        def phase(self, *args, **kwargs):
            state = steps.anatomy_state(state_name)
            steps.anatomy_push(state)
            try:
                return orig(self, *args, **kwargs)
            finally:
                steps.anatomy_pop(state)

        return _mark(phase, orig)

    return make


def _has_work(core) -> bool:
    """EngineCoreProc.has_work() (0.32), or the condition that 0.15's _process_input_queue waits on."""
    has_work = getattr(core, "has_work", None)
    if has_work is not None:
        return bool(has_work())
    return bool(core.engines_running or core.scheduler.has_requests() or core.batch_queue)


def _wrap_input_queue(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def _process_input_queue(self, *args, **kwargs):
        # Without work the engine blocks on its input queue until a request comes.
        state = steps.anatomy_state("input" if _has_work(self) else "idle")
        steps.anatomy_push(state)
        try:
            return orig(self, *args, **kwargs)
        finally:
            steps.anatomy_pop(state)

    return _mark(_process_input_queue, orig)


def _wrap_v1_runner_init(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def __init__(self, *args, **kwargs):
        _warn_once(
            "v1",
            "revati: vLLM chose the V1 model runner (vllm/v1/worker/gpu_model_runner.py); "
            "the semantic layer only covers the V2 runner: sampled token ids will be "
            "zeros/stale. Set VLLM_USE_V2_MODEL_RUNNER=1 or drop the unsupported feature.",
        )
        return orig(self, *args, **kwargs)

    return _mark(__init__, orig)


V2 = "vllm.v1.worker.gpu.model_runner"
V1 = "vllm.v1.worker.gpu_model_runner"
SCHED = "vllm.v1.core.sched.scheduler"
CORE = "vllm.v1.engine.core"


def _v1_seams() -> list[Seam]:
    from revati.vllm_plugin import v1_runner as v1

    return [
        Seam(V1, "GPUModelRunner._prepare_inputs", v1.wrap_prepare_inputs),
        Seam(V1, "GPUModelRunner._determine_batch_execution_and_padding", v1.wrap_padding),
        Seam(V1, "GPUModelRunner._bookkeeping_sync", v1.wrap_bookkeeping_sync),
        Seam(V1, "GPUModelRunner._to_list", v1.wrap_to_list),
        Seam(V1, "AsyncGPUModelRunnerOutput.__init__", v1.wrap_async_output_init),
        Seam(V1, "AsyncGPUModelRunnerOutput.get_output", v1.wrap_async_get_output),
        Seam(V1, "GPUModelRunner.execute_model", _wrap_phase("runner"), required=False),
        Seam(V1, "GPUModelRunner.sample_tokens", _wrap_phase("runner"), required=False),
    ]


#: The seam set of each semantic layer; revati/engines/vllm.py names the layer of each version range.
LAYERS: dict[str, Callable[[], list[Seam]]] = {
    "v2": lambda: [
        Seam(V2, "GPUModelRunner.prepare_inputs", _wrap_prepare_inputs),
        Seam(V2, "GPUModelRunner.add_requests", _wrap_add_requests),
        Seam(V2, "GPUModelRunner.sample", _wrap_sample),
        Seam("vllm.v1.worker.gpu.async_utils", "AsyncOutput.get_output", _wrap_get_output),
        Seam(V1, "GPUModelRunner.__init__", _wrap_v1_runner_init, required=False),
        Seam(V2, "GPUModelRunner.execute_model", _wrap_phase("runner"), required=False),
        Seam(V2, "GPUModelRunner.sample_tokens", _wrap_phase("runner"), required=False),
    ],
    "v1": _v1_seams,
}
#: Seams of every layer: the scheduler's and the engine core's (the step anatomy).
COMMON: list[Seam] = [
    Seam(SCHED, "Scheduler.schedule", _wrap_phase("sched"), required=False),
    Seam(SCHED, "Scheduler.update_from_output", _wrap_phase("sched"), required=False),
    Seam(CORE, "EngineCoreProc._process_input_queue", _wrap_input_queue, required=False),
]
DEFAULT_LAYER = "v2"
#: The active layer's seams (install() sets them).
SEAMS: list[Seam] = [*LAYERS[DEFAULT_LAYER](), *COMMON]
LAYER = DEFAULT_LAYER


class MissingSeamError(RuntimeError):
    """A required seam of the version's layer is missing: the emulation would read kernel outputs
    that never ran (or spin), so the engine must not start."""


def layer_of_installed_vllm() -> str:
    """The semantic layer of the vLLM installed in this interpreter (revati/engines/vllm.py).

    Raises:
        revati.engines.UnknownEngineError: the version is in no known range; the message names them.
    """
    from importlib import metadata

    from revati.engines.vllm import VllmAdapter

    return VllmAdapter.semantic_layer(metadata.version("vllm"))


# ---------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------


def patch_seam(seam: Seam, module) -> bool:
    cls_name, _, attr = seam.qualname.rpartition(".")
    owner = module
    for part in cls_name.split(".") if cls_name else []:
        owner = getattr(owner, part, None)
        if owner is None:
            break
    current = getattr(owner, attr, None) if owner is not None else None
    if owner is None or current is None or not callable(current):
        why = f"{seam.qualname} not found in {seam.module}"
        SEAM_STATUS[seam.name] = f"missing: {why}"
        if seam.required:
            raise MissingSeamError(
                f"revati: vLLM seam {seam.name} is missing: the semantic layer {LAYER!r} "
                f"(revati/vllm_plugin/patches.py) does not fit this vLLM ({_vllm_version()}); "
                f"revati/engines/vllm.py names the layer of each version range")
        else:
            logger.debug("revati: optional seam %s missing", seam.name)
        return False
    if getattr(current, MARK, False):
        SEAM_STATUS[seam.name] = "patched"
        return True
    setattr(owner, attr, seam.make(current))
    SEAM_STATUS[seam.name] = "patched"
    return True


def _vllm_version() -> str:
    from importlib import metadata

    try:
        return f"vllm {metadata.version('vllm')}"
    except metadata.PackageNotFoundError:
        return "vllm not installed"


def patch_module(module) -> None:
    for seam in SEAMS:
        if seam.module == module.__name__:
            try:
                patch_seam(seam, module)
            except MissingSeamError:
                raise
            except Exception:
                SEAM_STATUS[seam.name] = "missing: error while patching"
                _warn_once(seam.name, "revati: patching %s failed", seam.name, exc=True)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Patches a target module right after it executes, the first time it is imported."""

    def __init__(self, targets: set[str]):
        self.targets = targets
        self._busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.targets or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None:
                for finder in sys.meta_path:
                    if finder is self or not hasattr(finder, "find_spec"):
                        continue
                    spec = finder.find_spec(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module, _orig=orig_exec):
            _orig(module)
            patch_module(module)

        # Per-spec loader proxy: do not mutate a loader shared with other modules.
        spec.loader = _LoaderProxy(loader, exec_module)
        return spec


class _LoaderProxy(importlib.abc.Loader):
    def __init__(self, inner, exec_module):
        self._inner = inner
        self._exec = exec_module

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._exec(module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


_finder: _PostImportFinder | None = None


def install(layer: str | None = None) -> None:
    """Patch already-imported targets now; patch the others on first import.

    Args:
        layer: the seam set ("v1", "v2"); None: the installed vLLM's (layer_of_installed_vllm).

    Raises:
        MissingSeamError: a required seam of an already-imported module is missing.
    """
    global _finder, SEAMS, LAYER
    layer = layer or layer_of_installed_vllm()
    if _finder is None:
        LAYER = layer
        SEAMS = [*LAYERS[layer](), *COMMON]
    targets = {s.module for s in SEAMS}
    for name in sorted(targets):
        mod = sys.modules.get(name)
        if mod is not None:
            patch_module(mod)
        else:
            for s in SEAMS:
                if s.module == name:
                    SEAM_STATUS.setdefault(s.name, "pending")
    if _finder is None:
        _finder = _PostImportFinder(targets)
        sys.meta_path.insert(0, _finder)


def install_eager(layer: str | None = None) -> dict[str, str]:
    """Import every target module now and patch it (tests, diagnostics)."""
    install(layer)
    for name in sorted({s.module for s in SEAMS}):
        try:
            importlib.import_module(name)
        except MissingSeamError:
            raise
        except Exception as e:
            for s in SEAMS:
                if s.module == name:
                    SEAM_STATUS[s.name] = f"missing: import failed: {e}"
            _warn_once(name, "revati: cannot import %s (%s)", name, e)
    return dict(SEAM_STATUS)
