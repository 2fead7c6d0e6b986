"""`revati exec` runs on the time warp by default, as `revati run` does; --no-timewarp keeps
every clock real."""

from __future__ import annotations

import subprocess
import sys

CODE = "import os; print(os.environ.get('REVATI_TIMEWARP'), bool(os.environ.get('REVATI_CLOCK')))"


def _exec(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "revati.cli", "exec", "--predictor", "constant:1ms", *flags, "--",
                           sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)


def test_exec_is_on_the_time_warp_by_default():
    p = _exec()
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "True"] and "revati: time warp: deployment clock" in p.stderr
    assert _exec("--timewarp").stdout.split() == ["1", "True"]  # the old flag: accepted, a no-op


def test_no_timewarp_keeps_the_real_clock():
    p = _exec("--no-timewarp")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["None", "False"] and "time warp" not in p.stderr


def test_no_timewarp_does_not_go_with_the_clock_options():
    p = _exec("--no-timewarp", "--dilation", "2")
    assert p.returncode == 2 and "drop --no-timewarp" in p.stderr
