"""Split-state memory: capacity accounting of the real part, out-of-memory where it would
fail, real control data, and bulk memory that costs no host RAM."""

from __future__ import annotations

import pytest

OOM = """
import json, torch
free, total = torch.cuda.mem_get_info()
chunk = 1 << 30
held = []
while True:
    try:
        held.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError as e:
        err = str(e)
        break
allocated = len(held) * chunk
free_after, _ = torch.cuda.mem_get_info()
print(json.dumps({"free": free, "total": total, "allocated": allocated, "free_after": free_after,
                  "err": err[:200]}))
"""


@pytest.mark.parametrize("gpu", ["h100-sxm", "l40s"])
def test_out_of_memory_exactly_at_capacity(emulated, gpu):
    r = emulated(OOM, gpu=gpu)
    assert r.rc == 0, r.err
    d = r.json()
    # Every whole GiB that fit in the free memory was granted, and not one more.
    assert d["allocated"] == (d["free"] // (1 << 30)) * (1 << 30)
    assert d["free_after"] < (1 << 30) + (32 << 20)  # what is left is less than one more chunk (plus allocator rounding)
    assert "CUDA out of memory" in d["err"]


RSS = """
import json, resource, torch
# 75 GiB of weights and KV cache on a virtual 80 GB part, zero-initialised like vLLM's KV cache.
blocks = [torch.zeros(5 << 30, dtype=torch.uint8, device="cuda") for _ in range(15)]
torch.cuda.synchronize()
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
print(json.dumps({"bytes": sum(b.numel() for b in blocks), "rss": rss,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_bulk_memory_costs_no_host_ram(emulated):
    r = emulated(RSS)
    assert r.rc == 0, r.err
    d = r.json()
    assert d["bytes"] == 75 << 30
    print(f"75 GiB on the virtual H100: host RSS {d['rss'] / 2**20:.0f} MiB, peak {d['maxrss_kb'] / 1024:.0f} MiB")
    assert d["rss"] < 2 << 30


PINNED = """
import json, torch
h = torch.arange(4096, dtype=torch.int32).pin_memory()
d = h.to("cuda", non_blocking=True)
back = torch.empty(4096, dtype=torch.int32).pin_memory()
back.copy_(d, non_blocking=True)
torch.cuda.synchronize()
print(json.dumps({"pinned": h.is_pinned(), "equal": bool(torch.equal(h, back)),
                  "ptr_dev": d.device.type}))
"""


def test_pinned_host_memory_and_async_copies_are_real(emulated):
    r = emulated(PINNED)
    assert r.rc == 0, r.err
    d = r.json()
    assert d == {"pinned": True, "equal": True, "ptr_dev": "cuda"}
