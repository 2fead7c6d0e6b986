"""register(): a no-op unless REVATI_ACTIVE=1; lazy, idempotent patching of the real vLLM.

Each case runs in a fresh interpreter, because patching is process-global and the point
is what happens on the *first* import of the vLLM modules.
"""

from __future__ import annotations

import json

import pytest

from .conftest import run_python

PROBE = r"""
import json, os, sys
import revati.vllm_plugin as p
from revati.vllm_plugin import patches
p.register()
before = p.seam_status()
finders = [type(f).__name__ for f in sys.meta_path]
import vllm.v1.worker.gpu.model_runner as mr
import vllm.v1.worker.gpu.async_utils as au
import vllm.v1.worker.gpu_model_runner as v1
import vllm.v1.core.sched.scheduler as sched  # the step anatomy's phases
import vllm.v1.engine.core as core
p.register()  # idempotent
if os.environ.get("REVATI_ACTIVE"):
    patches.install()  # idempotent too
def state(fn):
    orig = getattr(fn, "__revati_original__", None)
    return {
        "patched": bool(getattr(fn, "__revati_patched__", False)),
        "double": bool(orig is not None and getattr(orig, "__revati_patched__", False)),
        "orig_module": getattr(orig, "__module__", None),
    }
print(json.dumps({
    "before": before,
    "after": p.seam_status(),
    "finders": finders,
    "sample": state(mr.GPUModelRunner.sample),
    "prepare_inputs": state(mr.GPUModelRunner.prepare_inputs),
    "add_requests": state(mr.GPUModelRunner.add_requests),
    "get_output": state(au.AsyncOutput.get_output),
    "v1_init": state(v1.GPUModelRunner.__init__),
    "execute_model": state(mr.GPUModelRunner.execute_model),
    "schedule": state(sched.Scheduler.schedule),
    "input_queue": state(core.EngineCoreProc._process_input_queue),
}))
"""


def _run_probe(active: bool) -> dict:
    proc = run_python(PROBE, {"REVATI_ACTIVE": "1" if active else None})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inactive():
    return _run_probe(active=False)


@pytest.fixture(scope="module")
def active():
    return _run_probe(active=True)


def test_register_is_a_noop_without_revati_active(inactive):
    assert inactive["before"] == {} and inactive["after"] == {}
    assert "_PostImportFinder" not in inactive["finders"]
    for seam in ("sample", "prepare_inputs", "add_requests", "get_output", "v1_init"):
        assert not inactive[seam]["patched"], seam


def test_register_patches_lazily_on_first_import(active):
    # Nothing of vLLM's model runner was imported at register() time ...
    assert set(active["before"].values()) == {"pending"}
    assert "_PostImportFinder" in active["finders"]
    # ... and every seam is ours once it is.
    assert set(active["after"].values()) == {"patched"}, active["after"]
    for seam in ("sample", "prepare_inputs", "add_requests", "get_output", "v1_init", "execute_model", "schedule",
                 "input_queue"):
        assert active[seam]["patched"], seam
        assert not active[seam]["double"], f"{seam} wrapped twice"
        assert active[seam]["orig_module"].startswith("vllm."), active[seam]
