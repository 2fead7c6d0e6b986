"""A prediction that takes the sidecar longer than the deadlock window is not a deadlock: the
thread that waits for the reply holds the clock (the emulator's own work), and the Timekeeper
does not count a hold as every thread being blocked. Before, `revati exec` on a loaded host
stopped on a "deadlock" 5 s into a first prediction that loaded a model."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from revati.launch.env import emulator_env
from revati.predictor import Predictor
from revati.sidecar.server import SidecarServer
from revati.timekeeper.timekeeper import Timekeeper

LAUNCH = r"""
import ctypes
lib = ctypes.CDLL("libcuda.so.1")
mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
assert lib.cuModuleLoadData(ctypes.byref(mod), b"") == 0
assert lib.cuModuleGetFunction(ctypes.byref(fn), mod, b"_Z13rms_norm_kernelv") == 0
assert lib.cuLaunchKernel(fn, 132, 1, 1, 128, 1, 1, 0, None, None, None) == 0
print("launched")
"""


def test_a_slow_prediction_is_no_deadlock(tmp_path):
    slow_s = 6.5
    deadlocks: list[str] = []
    tk = Timekeeper(on_deadlock=deadlocks.append).start()  # recorded, not killed
    assert tk.deadlock_s is not None and tk.deadlock_s < slow_s
    sock = Path(tempfile.mkdtemp(prefix="rv-slow-")) / "s.sock"
    server = SidecarServer(f"ipc://{sock}", predictor=Predictor.load("h100-sxm"))
    predict = server.predictor.predict_parts
    slowed = []

    def slow_predict(parts):
        if not slowed:
            slowed.append(time.monotonic())
            time.sleep(slow_s)
        return predict(parts)

    server.predictor.predict_parts = slow_predict
    server.start_in_thread()
    try:
        env = emulator_env("h100-sxm", sidecar=server.endpoint, timewarp=tk, offline_hub=False)
        p = subprocess.run([sys.executable, "-c", LAUNCH], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        tk.stop()
    assert slowed, "the launch did not ask the sidecar"
    assert p.returncode == 0 and "launched" in p.stdout, p.stderr
    assert not deadlocks and tk.deadlock is None and tk.stats.holds >= 1
