"""Helpers for time-warp tests: processes on a Timekeeper's clock."""

from __future__ import annotations

import subprocess
import sys
import time

from revati.launch.env import emulator_env
from revati.timekeeper.timekeeper import Timekeeper


def tw_env(tk: Timekeeper, **extra: str) -> dict[str, str]:
    env = emulator_env("h100-sxm", offline_hub=False)
    env.update(tk.env())
    env.update(extra)
    return env


def spawn(tk: Timekeeper, code: str, *args: str, pass_fds: tuple[int, ...] = (),
          **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=tw_env(tk, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=pass_fds)


def finish(*procs: subprocess.Popen, timeout: float = 60) -> list[str]:
    """Waits for every process; returns their stdouts. Fails on a non-zero exit."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def run(tk: Timekeeper, code: str, timeout: float = 60, **extra: str) -> tuple[str, float]:
    """Runs code on tk's clock; returns (stdout, wall seconds). Fails on a non-zero exit."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], env=tw_env(tk, **extra), capture_output=True,
                       text=True, timeout=timeout)
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    return p.stdout, wall
