"""Shared test helpers: run code under the emulator in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended, never prepended: see operator/revati_operator

from revati.launch.env import emulator_env  # noqa: E402


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> dict:
        """The last stdout line, parsed as JSON."""
        return json.loads(self.out.strip().splitlines()[-1])


def run_emulated(code: str, *, gpu: str = "h100-sxm", env: dict[str, str] | None = None,
                 timeout: float = 300, offline_hub: bool = False, cwd: Path | None = None) -> Result:
    """Runs `python -c code` under the emulator and returns its exit code and output."""
    e = emulator_env(gpu, offline_hub=offline_hub)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                       timeout=timeout, cwd=cwd or REPO.parent)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def emulated():
    return run_emulated
