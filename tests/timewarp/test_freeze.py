"""Freezing the clock around one-off work (revati_clock_freeze): a Triton kernel's first-use
JIT compile in a vLLM process must not land in a request's latency."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from revati.timekeeper import clock_page as cp
from tests.timewarp._timewarp import finish, run, spawn, tw_env


def test_page_freeze_nests_keeps_the_rate_and_never_steps(tmp_path):
    page = cp.ClockPage.create(tmp_path / "page", sock_path="/x", protocol_version=2)
    try:
        def advance(s: float) -> int:
            v0 = page.now_ns()
            time.sleep(s)
            return page.now_ns() - v0

        assert advance(0.05) >= 50_000_000
        v = page.now_ns()
        page.freeze()
        page.freeze()
        assert page.frozen and page.now_ns() >= v  # no step back at the freeze
        page.set_dilation(2_000_000)  # the governor slows the clock meanwhile: kept for later
        assert page.rate_ppm() == 2_000_000
        assert advance(0.05) < 1_000  # 1 / FROZEN_FACTOR of real speed: 50 ns
        page.thaw()
        assert page.frozen and advance(0.02) < 1_000
        v = page.now_ns()
        page.thaw()
        page.thaw()  # an extra thaw is ignored
        assert not page.frozen and page.now_ns() - v < 1_000_000  # continuous at the thaw
        d = advance(0.1)
        assert 45_000_000 <= d <= 80_000_000  # at the rate set while frozen: half speed
    finally:
        page.close()


BUSY = r'''
import ctypes, json, time
f = ctypes.CDLL(None).revati_clock_freeze
f.argtypes, f.restype = [ctypes.c_int], ctypes.c_int
def busy(s):  # CPU work: process time is real under the shim, monotonic time virtual
    c = time.process_time()
    while time.process_time() - c < s:
        pass
out = {}
t0 = time.monotonic(); busy(0.3); out["plain"] = time.monotonic() - t0
t0 = time.monotonic(); a = f(1); busy(0.3); b = f(-1); out["frozen"] = time.monotonic() - t0
t0 = time.monotonic(); busy(0.3); out["after"] = time.monotonic() - t0
out["rc"] = [a, b, f(2), f(0)]
print(json.dumps(out))
'''


def test_a_freeze_stops_the_deployment_clock_while_the_process_works(timekeeper):
    out, _ = run(timekeeper, BUSY)
    r = json.loads(out)
    assert r["rc"] == [0, 0, -1, -1]  # only +1 and -1 are deltas
    assert r["plain"] >= 0.29 and r["after"] >= 0.29  # CPU work is virtual time...
    assert r["frozen"] < 0.02  # ...except while frozen (the message takes microseconds)
    assert timekeeper.stats.freezes == 1 and not timekeeper.page.frozen
    assert timekeeper.stats.frozen_ns >= 300_000_000


def test_a_process_that_exits_frozen_leaves_the_clock_running(timekeeper):
    code = ("import ctypes, os; f = ctypes.CDLL(None).revati_clock_freeze; f.argtypes = [ctypes.c_int]; "
            "assert f(1) == 0 and f(1) == 0; print('frozen', flush=True); os._exit(0)")
    p = spawn(timekeeper, code)
    out, = finish(p)
    assert "frozen" in out
    deadline = time.monotonic() + 10
    while timekeeper.page.frozen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not timekeeper.page.frozen and timekeeper.stats.freezes == 2
    v0 = timekeeper.page.now_ns()
    time.sleep(0.05)
    assert timekeeper.page.now_ns() - v0 >= 50_000_000


TRITON = r'''
import json, sys, time
import torch, triton, triton.language as tl
if sys.argv[1] == "plugin":
    from revati.vllm_plugin import _freeze_clock_during_jit
    _freeze_clock_during_jit()
@triton.jit
def add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)
x = torch.zeros(1000, device="cuda")
triton.runtime.driver.active.get_current_device()  # the driver's own set-up, once per process
torch.cuda.synchronize()
t0, c0 = time.monotonic(), time.process_time()
add_one[(4,)](x, 1000, BLOCK=256)  # first use: compiled into an empty cache, then loaded
torch.cuda.synchronize()
print(json.dumps({"virtual_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0}))
'''


@pytest.mark.parametrize("mode", ["plugin", "plain"])
def test_triton_first_use_under_the_plugin_is_frozen(timekeeper, tmp_path, mode):
    pytest.importorskip("triton")
    env = tw_env(timekeeper, TRITON_CACHE_DIR=str(tmp_path / "triton"), REVATI_PREDICTOR="constant:1ms")
    script = tmp_path / "first_use.py"  # @triton.jit reads its source from a file
    script.write_text(TRITON)
    p = subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    assert r["cpu_s"] > 0.2, r  # it did compile (ptxas and the launcher run in children)
    if mode == "plain":
        assert r["virtual_s"] >= 0.5 * r["cpu_s"] and timekeeper.stats.freezes == 0, r
    else:
        # what is left: the binder's one-off import of triton's gluon modules at the first call
        # (before serving in vLLM: its warm-up calls every kernel) and the 1 ms launch
        assert r["virtual_s"] < 0.3 * r["cpu_s"], r
        assert timekeeper.stats.freezes >= 3 and not timekeeper.page.frozen
