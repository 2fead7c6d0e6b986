"""The prediction sidecar's start-up for one local process tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def zmq_library() -> str:
    """The libzmq that pyzmq ships; the shim opens it to talk to the sidecar."""
    import zmq

    site = Path(zmq.__file__).resolve().parent.parent
    libs = sorted((site / "pyzmq.libs").glob("libzmq*.so*"))
    if not libs:
        raise RuntimeError(f"no libzmq found in {site / 'pyzmq.libs'}; the shim cannot reach the sidecar")
    return str(libs[0])


@contextmanager
def prediction_sidecar(gpu: str, workdir: str | os.PathLike | None = None, startup_timeout_s: float = 120.0,
                       on_start: Callable[[subprocess.Popen, Path], None] | None = None
                       ) -> Iterator[tuple[str, dict]]:
    """Runs the prediction sidecar for one process tree.

    Yields (endpoint, stats): stats is filled with the sidecar's counters (predictions,
    fallbacks by family) when the block exits. on_start: called with the process and its log
    once it started (the runner's watchdog).
    """
    from revati.sidecar import SidecarClient

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="revati-sidecar-"))
    tmp.mkdir(parents=True, exist_ok=True)
    sock = tmp / "sidecar.sock"
    # NOTE: a Unix socket path holds at most 107 bytes; a deep run folder (a pytest tmp_path)
    # would make the sidecar fail to bind. Then the socket lives in a short temporary folder.
    short = None
    if len(str(sock).encode()) > 100:
        short = Path(tempfile.mkdtemp(prefix="rv-sc-"))
        sock = short / "s.sock"
    endpoint = f"ipc://{sock}"
    log = open(tmp / "sidecar.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "revati.cli", "sidecar", "--endpoint", endpoint, "--gpu", gpu],
                            stdout=log, stderr=subprocess.STDOUT, process_group=0)
    stats: dict = {}
    try:
        if on_start is not None:
            on_start(proc, tmp / "sidecar.log")
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the prediction sidecar exited ({proc.returncode}); see {tmp / 'sidecar.log'}")
            try:
                with SidecarClient(endpoint, timeout_s=2.0) as c:
                    c.hello(gpu)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the prediction sidecar did not answer in {startup_timeout_s:.0f} s")
                time.sleep(0.3)
        yield endpoint, stats
        try:
            if proc.poll() is not None:  # (killed: no counters, and no 5 s wait for them)
                raise ProcessLookupError
            with SidecarClient(endpoint, timeout_s=5.0) as c:
                stats.update(c.stats())
        except Exception:
            pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)
