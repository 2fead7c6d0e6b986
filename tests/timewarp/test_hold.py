"""The clock holds while the shim asks the prediction sidecar (a cache miss): the round trip is
the emulator's own work. Before the hold, the thread waiting for the reply looked idle in /proc,
so the Timekeeper jumped the clock across the reply to another thread's timer: 200 GEMM misses
beside a thread with a 50 ms timer took 333 virtual seconds instead of ~30 ms."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MISSES = r'''
import threading, time, torch
stop = False
def ticker():  # a timer elsewhere in the deployment, as uvicorn's or the load generator's
    while not stop:
        time.sleep(0.05)
threading.Thread(target=ticker, daemon=True).start()
a = torch.zeros(8192, 4096, device="cuda", dtype=torch.bfloat16)
b = torch.zeros(4096, 4096, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
t0 = time.monotonic()
for m in range(1, 201):  # 200 GEMM shapes the shim has not seen: 200 sidecar misses
    x = a[:m * 7] @ b
torch.cuda.synchronize()
print(f"MISSES_VIRTUAL_S {time.monotonic() - t0:.6f}")
stop = True
'''


def test_sidecar_misses_cost_no_virtual_time_and_no_jump(tmp_path):
    script = tmp_path / "misses.py"
    script.write_text(MISSES)
    out = subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--timewarp", "--", sys.executable,
                          str(script)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    virtual = float(re.search(r"MISSES_VIRTUAL_S ([0-9.]+)", text).group(1))
    misses = int(re.search(r"(\d+) misses", text).group(1))
    assert misses >= 200, text
    # 200 GEMMs of ~50 us predicted plus this host's launch CPU: well under a second (was 333 s).
    assert virtual < 1.0, text
