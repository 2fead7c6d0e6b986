"""Attention kernels are predicted from the step's batch composition, which the vLLM semantic
layer hands to the shim (revati_set_model / revati_set_step)."""

from __future__ import annotations

import json
import os
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


HELPERS = r"""
import ctypes
lib = ctypes.CDLL("libcuda.so.1")
lib.revati_set_step.argtypes = [ctypes.c_int64] * 10
lib.revati_set_model(32, 32, 128, 4096, 11008)         # Llama-2-7B per GPU at TP=1
mod = ctypes.c_void_p()
assert lib.cuModuleLoadData(ctypes.byref(mod), b"") == 0
lib.revati_set_step(32, 32, 0, 32, 0, 0, 0, 0, 32 * 1024, 1024)   # decode: 32 x 1024 keys
# One FlashAttention-3 decode call launches three kernels (names as in vLLM's _vllm_fa3_C).
for name, grid in ((b"_ZN5flash32prepare_varlen_num_blocks_kernelEv", 1),
                   (b"_ZN5flash16FlashAttnFwdSm90IN4cute5tupleEEEvv", 132),
                   (b"_ZN5flash19FlashAttnFwdCombineIN4cute5tupleEEEvv", 64),
                   (b"_Z32flash_fwd_splitkv_combine_kernelv", 64)):                  # FA2's combine
    fn = ctypes.c_void_p()
    assert lib.cuModuleGetFunction(ctypes.byref(fn), mod, name) == 0
    assert lib.cuLaunchKernel(fn, grid, 1, 1, 128, 1, 1, 0, None, None, None) == 0
"""


def test_flash_attention_helper_kernels_are_not_charged_the_whole_op(tmp_path):
    """Each attention call is one op: the split-KV scheduler and combine kernels around the main
    kernel were each described as the whole attention op, which charged decode attention 3x."""
    trace = tmp_path / "t.json"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--trace", str(trace), "--",
                        sys.executable, "-c", HELPERS], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    att = [e for e in events if e["cat"] == "attention"]
    assert len(att) == 1 and "FlashAttnFwdSm90" in att[0]["name"], [(e["name"], e["cat"]) for e in events]
    others = [e["dur"] for e in events if e["cat"] != "attention"]
    assert len(others) == 3 and max(others) < 0.25 * att[0]["dur"], (att, others)


PREFETCH = CODE.split("step(0, 32, 256)")[0] + r"""
for kv in range(256, 264):   # decode steps, one token further on each
    step(0, 32, kv)
step(2048, 32, 300)          # the batch changed: this step's own attention
step(0, 33, 301)
"""


def _attention_run(tmp_path, prefetch: str) -> tuple[list[float], dict]:
    trace, stats = tmp_path / f"t{prefetch}.json", tmp_path / f"s{prefetch}"
    env = {**os.environ, "REVATI_SIDECAR_PREFETCH": prefetch}
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--trace", str(trace), "--stats", str(stats), "--",
                        sys.executable, "-c", PREFETCH], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    durs = [e["dur"] for e in json.loads(trace.read_text())["traceEvents"]
            if e["ph"] == "X" and e["cat"] == "attention"]
    files = list(tmp_path.glob(f"s{prefetch}.*.json"))
    assert len(files) == 1, files
    return durs, json.loads(files[0].read_text())


def test_prefetched_attention_is_the_same_prediction(tmp_path):
    """The step's attention asked for ahead (at revati_set_step, and a decode step's successor)
    gets the very answer that a miss would get; the steps one token further on find it there."""
    off, s_off = _attention_run(tmp_path, "0")
    on, s_on = _attention_run(tmp_path, "1")
    assert len(on) == len(off) == 10
    assert on == off
    assert s_off["prefetch"]["sent"] == 0
    pf = s_on["prefetch"]
    assert pf["ahead"] >= 8 and pf["sent"] >= pf["ahead"]
    # without prefetch every step missed and waited for its own request; with it, the decode
    # steps after the first were sent a step ahead, and the mixed step's and the last step's own
    # at their announcement: a miss only read a reply already asked for (used), whether it had
    # arrived or not (that depends on the host's timing; a reply read before the launch is a hit)
    synchronous = s_on["predictor"]["misses"] - pf["used"]
    assert synchronous < s_off["predictor"]["misses"]
