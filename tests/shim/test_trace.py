"""REVATI_TRACE: a Chrome/Perfetto trace of the virtual GPU timelines, with op descriptors."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import torch
a = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
b = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
c = a @ b                                  # row-major 64x128 @ 128x256
h = torch.ones(1 << 20, dtype=torch.uint8)
d = h.cuda()                               # 1 MiB host-to-device copy
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    w = torch.relu(a)
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    y = torch.relu(a)
g.replay()
torch.cuda.synchronize()
"""


def test_trace_has_one_track_per_process_and_stream_with_descriptors(tmp_path):
    trace = tmp_path / "trace.json"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--trace", str(trace), "--",
                        sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    ops = [e for e in events if e["ph"] == "X"]
    assert any(e["name"] == "process_name" for e in meta)
    assert any(e["name"] == "thread_name" and "stream" in e["args"]["name"] for e in meta)
    assert len({e["pid"] for e in ops}) == 1

    gemms = [e for e in ops if e["cat"] == "gemm"]
    # cuBLAS is column-major: C^T (256x64) = B^T (256x128) A^T (128x64).
    assert any(g["args"]["m"] == 256 and g["args"]["n"] == 64 and g["args"]["k"] == 128
               and g["args"]["dtype"] == "bf16" for g in gemms), gemms
    copies = [e for e in ops if e["cat"] == "memcpy" and e["args"]["direction"] == "h2d"]
    assert any(c["args"]["bytes"] == 1 << 20 for c in copies)
    kernels = [e for e in ops if "mangled" in e.get("args", {})]
    assert kernels and all(k["args"]["mangled"].startswith("_Z") for k in kernels)
    assert all("grid" in k["args"] and "block" in k["args"] for k in kernels)
    assert any("elementwise" in k["args"]["demangled"] for k in kernels)
    replayed = [e for e in ops if e["args"].get("graph") == 1]
    assert replayed, "graph replay puts its nodes on the timeline"
    # Ops on one stream never overlap on the virtual timeline.
    by_stream: dict[tuple, list] = {}
    for e in ops:
        by_stream.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_stream.values():
        spans.sort()
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert s1 >= e0 - 1e-3


def test_bare_revati_trace_parts_merge_with_the_cli(tmp_path):
    """REVATI_TRACE without `revati exec`: processes leave parts, `revati trace merge` joins them."""
    from revati.launch.env import emulator_env

    trace = tmp_path / "bare.json"
    env = emulator_env("h100-sxm", offline_hub=False)
    env["REVATI_TRACE"] = str(trace)
    code = "import torch; a = torch.ones(64, 64, device='cuda'); b = a @ a; torch.cuda.synchronize()"
    for _ in range(2):  # two processes, two parts
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert len(list((tmp_path / "bare.json.parts").glob("*.jsonl"))) == 2
    p = subprocess.run([sys.executable, "-m", "revati.cli", "trace", "merge", str(trace)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    assert len({e["pid"] for e in events if e["ph"] == "X"}) == 2
    assert any(e["ph"] == "X" and e["cat"] == "gemm" for e in events)
