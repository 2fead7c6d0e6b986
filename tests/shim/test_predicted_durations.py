"""Op durations on the virtual timeline come from the duration source: the trained
predictor through the sidecar (default for `revati exec`), or an exact constant."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from revati.predictor import Predictor

CODE = """
import torch
a = torch.randn(2048, 4096, device="cuda", dtype=torch.bfloat16)
w = torch.randn(4096, 14336, device="cuda", dtype=torch.bfloat16)
for _ in range(5):
    y = a @ w
torch.cuda.synchronize()
"""


def _run(tmp_path, *flags):
    trace = tmp_path / "trace.json"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--trace", str(trace), *flags, "--",
                        sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    return p.stderr, events


def test_gemms_take_the_trained_predictors_time(tmp_path):
    err, events = _run(tmp_path)
    gemms = [e for e in events if e["cat"] == "gemm"]
    assert len(gemms) == 5
    # cuBLAS sees the row-major product column-major: m=14336, n=2048, k=4096 (as recorded)...
    g = gemms[0]["args"]
    assert (g["m"], g["n"], g["k"]) == (14336, 2048, 4096)
    # ...and the predictor is asked the row-major product, as its profiles are: C[2048, 14336].
    expected_us = Predictor.load("h100-sxm").predict_us([{"op": "gemm", "m": 2048, "n": 14336, "k": 4096, "dtype": "bf16"}])[0]
    swapped_us = Predictor.load("h100-sxm").predict_us([{"op": "gemm", "m": 14336, "n": 2048, "k": 4096, "dtype": "bf16"}])[0]
    assert abs(swapped_us - expected_us) > 0.02 * expected_us  # the test tells the two apart
    for e in gemms:
        assert abs(e["dur"] - expected_us) < 0.01 * expected_us + 0.002
    assert "duration source sidecar" in err
    assert "hit rate" in err and "predictor fallbacks" in err
    # The same GEMM five times: one miss, then cache hits.
    hits, misses = map(int, re.search(r"(\d+) hits, (\d+) misses", err).groups())
    assert hits >= 4 and misses >= 1


def test_constant_predictor_makes_every_op_exactly_that_long(tmp_path):
    err, events = _run(tmp_path, "--predictor", "constant:250us")
    assert events and all(abs(e["dur"] - 250.0) < 1e-6 for e in events)
    assert "duration source constant:250us" in err
