"""torch on a virtual GPU: the catalog part's properties, and ordinary ops that never run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from revati.catalog import load_catalog

PROPS = """
import json, torch
p = torch.cuda.get_device_properties(0)
free, total = torch.cuda.mem_get_info()
print(json.dumps({"avail": torch.cuda.is_available(), "count": torch.cuda.device_count(),
  "name": p.name, "total": p.total_memory, "sms": p.multi_processor_count, "cc": [p.major, p.minor],
  "l2": p.L2_cache_size, "free": free, "mem_total": total,
  "uuids": [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]}))
"""


@pytest.mark.parametrize("key", list(load_catalog()))
def test_torch_sees_the_catalog_part(emulated, key):
    spec = load_catalog()[key]
    r = emulated(PROPS, gpu=key)
    assert r.rc == 0, r.err
    d = r.json()
    assert d["avail"] is True
    assert d["count"] == spec.max_gpus_per_node
    assert d["name"] == spec.name
    assert d["total"] == spec.memory_bytes == d["mem_total"]
    assert d["sms"] == spec.sm_count
    assert d["cc"] == [spec.cc_major, spec.cc_minor]
    assert d["l2"] == spec.l2_bytes
    # A fresh context holds about half a GiB, as on the real part.
    assert spec.memory_bytes - 2**30 < d["free"] < spec.memory_bytes
    assert len(set(d["uuids"])) == d["count"]


def test_h100_is_the_default_and_names_match_the_real_part(emulated):
    r = emulated(PROPS)
    assert r.rc == 0, r.err
    d = r.json()
    assert d["name"] == "NVIDIA H100 80GB HBM3"
    assert d["sms"] == 132 and d["cc"] == [9, 0]


def test_cuda_visible_devices_selects_devices_by_index(emulated):
    full = emulated(PROPS).json()["uuids"]
    r = emulated(PROPS, env={"CUDA_VISIBLE_DEVICES": "5,2"})
    assert r.rc == 0, r.err
    d = r.json()
    assert d["count"] == 2
    assert d["uuids"] == [full[5], full[2]]


OPS = """
import json, torch
dev = "cuda"
x = torch.zeros(1000, 1000, device=dev)
y = (x + 1) * 3
a32 = torch.randn(64, 128, device=dev); b32 = torch.randn(128, 256, device=dev)
c32 = a32 @ b32
a = torch.randn(64, 128, device=dev, dtype=torch.bfloat16); b = torch.randn(128, 256, device=dev, dtype=torch.bfloat16)
c = a @ b
bm = torch.bmm(torch.randn(4, 8, 16, device=dev), torch.randn(4, 16, 32, device=dev))
lin = torch.nn.Linear(256, 512).to(dev, torch.bfloat16)
out = lin(torch.randn(32, 256, device=dev, dtype=torch.bfloat16))
sm = torch.softmax(out.float(), dim=-1)
# control data round-trips exactly
vals = list(range(1000))
back = torch.tensor(vals, device=dev).cpu().tolist()
# CUDA graph capture and replay
static = torch.randn(64, 128, device=dev, dtype=torch.bfloat16)
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(2): warm = static @ b
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    gout = torch.relu(static @ b)
for _ in range(3): g.replay()
e0 = torch.cuda.Event(enable_timing=True); e1 = torch.cuda.Event(enable_timing=True)
e0.record(); big = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16) @ torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16); e1.record()
torch.cuda.synchronize()
print(json.dumps({"shapes": [list(c32.shape), list(c.shape), list(bm.shape), list(out.shape), list(sm.shape), list(gout.shape)],
                  "roundtrip": back == vals, "elapsed_ms": e0.elapsed_time(e1)}))
"""


@pytest.mark.parametrize("gpu", ["h100-sxm", "l40s"])
def test_ordinary_torch_ops_run_and_record(emulated, tmp_path, gpu):
    stats = tmp_path / "stats"
    r = emulated(OPS + "\nprint(json.dumps({'cumsum': torch.cumsum(torch.arange(10, device='cuda'), 0).shape[0]}))",
                 gpu=gpu, env={"REVATI_STATS_FILE": str(stats)})
    assert r.rc == 0, r.err
    # CUB (cumsum) picks its code path from the binary the driver would load from the fat
    # binary (sm_86 code on an sm_89 L40S), not from the device's compute capability.
    assert r.json() == {"cumsum": 10}
    d = json.loads(r.out.strip().splitlines()[-2])
    assert d["shapes"] == [[64, 256], [64, 256], [4, 8, 32], [32, 512], [32, 512], [64, 256]]
    assert d["roundtrip"] is True
    # A 4096^3 bf16 GEMM is ~137 GFLOP: at least ~0.14 ms on a 989 TFLOPS part, and the
    # event pair measures virtual GPU time, not host time.
    assert 0.1 < d["elapsed_ms"] < 50
    [f] = list(tmp_path.glob("stats.*.json"))
    s = json.loads(f.read_text())
    assert s["ops"]["gemm"] >= 7          # fp32, bf16, bmm, linear, warm-up x2, graph, big
    assert s["ops"]["kernel"] >= 5
    assert s["graph_launches"] == 3 and s["graph_nodes_replayed"] >= 6
    assert s["stub_hits"] == 0


def test_revati_exec_cli_runs_a_command_under_the_emulator():
    code = "import torch; print(torch.cuda.get_device_name(0))"
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--gpu", "a100-80gb-sxm", "--",
                        sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "NVIDIA A100-SXM4-80GB"


def test_revati_exec_rejects_an_unknown_gpu():
    p = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--gpu", "b300", "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "unknown GPU 'b300'" in p.stderr and "h100-sxm" in p.stderr
