"""`dilation: auto` (revati/timekeeper/calibrate.py): this host's per-thread CPU speed against
the target host's reference, independent of how loaded this host is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from revati.timekeeper import calibrate


def test_auto_dilation_is_here_over_the_reference_and_says_so():
    ref = calibrate.reference()
    d, how = calibrate.auto_dilation(here_s=2 * ref["seconds"])
    assert d == pytest.approx(2.0)
    assert "2.000" in how and ref["name"] in how
    assert "not a GPU host's measurement" in how  # the shipped default is an assumption


def test_a_recorded_gpu_host_wins_over_the_default(tmp_path, monkeypatch):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"references": [
        {"name": "default", "cpu": "x", "seconds": 0.02, "target_default": True},
        {"name": "my-h100-host", "cpu": "y", "seconds": 0.04, "gpu_server": True}]}))
    monkeypatch.setattr(calibrate, "REFERENCES", refs)
    d, how = calibrate.auto_dilation(here_s=0.02)
    assert d == pytest.approx(0.5) and "my-h100-host" in how and "a GPU host's measurement" in how
    refs.write_text(json.dumps({"references": []}))
    with pytest.raises(LookupError, match="gpu-server"):
        calibrate.auto_dilation(here_s=0.02)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_the_measure_is_cpu_time_not_wall_time_on_a_shared_core():
    """A hog on the same core doubles the workload's wall time; the CPU-time measure stays."""
    core = min(os.sched_getaffinity(0))
    code = ("import os; os.sched_setaffinity(0, {%d}); from revati.timekeeper.calibrate import measure; "
            "print(measure(repeats=5))" % core)
    alone = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    hog = subprocess.Popen([sys.executable, "-c", "import os,time; os.sched_setaffinity(0, {%d}); "
                            "t = time.time() + 60\nwhile time.time() < t: pass" % core])
    try:
        shared = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    finally:
        hog.kill()
        hog.wait()
    assert shared < 1.5 * alone, (alone, shared)  # wall time would be ~2x
