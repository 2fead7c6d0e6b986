"""Attention kernels are predicted from the step's batch composition, which the vLLM semantic
layer hands to the shim (revati_set_model / revati_set_step)."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = r"""
import ctypes
lib = ctypes.CDLL("libcuda.so.1")
lib.revati_set_step.argtypes = [ctypes.c_int64] * 10
lib.revati_set_model(32, 8, 128, 4096, 14336)          # Llama-3-8B per GPU at TP=1
mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
assert lib.cuModuleLoadData(ctypes.byref(mod), b"") == 0
assert lib.cuModuleGetFunction(ctypes.byref(fn), mod, b"flash_attn_varlen_fwd_kernel") == 0

def step(prefill, decode_reqs, decode_kv):
    # prefill: one sequence of `prefill` new tokens on an empty cache (0 = none)
    pairs = prefill * (prefill + 1) // 2
    lib.revati_set_step(prefill + decode_reqs, (1 if prefill else 0) + decode_reqs, 1 if prefill else 0,
                        decode_reqs, prefill, prefill, prefill, pairs, decode_reqs * decode_kv,
                        decode_kv if decode_reqs else 0)
    assert lib.cuLaunchKernel(fn, 132, 1, 1, 128, 1, 1, 0, None, None, None) == 0

step(0, 32, 256)       # decode, short contexts
step(0, 32, 8000)      # decode, long contexts
step(2048, 0, 0)       # prefill only
step(2048, 32, 8000)   # mixed: the same prefill plus the long decodes
"""


def test_attention_time_follows_the_batch_composition(tmp_path):
    trace = tmp_path / "t.json"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--trace", str(trace), "--",
                        sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    durs = [e["dur"] for e in json.loads(trace.read_text())["traceEvents"]
            if e["ph"] == "X" and e["cat"] == "attention"]
    assert len(durs) == 4, durs
    short_decode, long_decode, prefill, mixed = durs
    assert long_decode > 4 * short_decode            # decode attention reads the whole KV cache (32x more here)
    assert prefill > short_decode
    assert abs(mixed - (prefill + long_decode)) < 0.01 * mixed   # both parts of a mixed step count
