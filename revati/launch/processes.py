"""Process groups: start a child as the leader of its own group, wait until it answers its
probe, and kill its whole tree on success, failure or Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Children lead their own process group (process_group=0), not their own session: a new
# session is a new scheduler autogroup, and the host's CPU would be shared per session instead
# of per task, which the contention governor (revati/timekeeper/governor.py) assumes.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(proc: subprocess.Popen, grace_s: float = 20.0, leader_only: bool = False) -> None:
    """SIGTERM, then after grace_s SIGKILL to the process group of proc.

    leader_only: the SIGTERM goes to the leader alone, which stops its own children: a running
    vllm serve terminates its engine core, which drains and exits. A second SIGTERM from us
    would reach the engine core after it restored the default handler and kill it mid-teardown
    (before its shim wrote its stats). During start-up the whole group gets it at once."""
    if proc.poll() is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphans of an exited leader
        except ProcessLookupError:
            pass
        return
    try:
        if leader_only:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def descendants(pid: int) -> list[int]:
    """The live descendants of pid, from /proc/<pid>/task/*/children (no psutil: this runs every
    quarter second in the ledger and the start-up display)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = [int(x) for x in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


class ServerFailed(RuntimeError):
    """A served process exited or did not answer its probe during start-up.

    Attributes:
        returncode: its exit status when it exited, None when it did not answer in time.
        pid: its process id.
    """

    def __init__(self, message: str, returncode: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.pid = pid


@dataclass
class Server:
    url: str
    pid: int          # leader of the server's process group
    log_path: Path

    def tree_rss_bytes(self) -> dict[str, int]:
        """Resident memory of every process of the server, by "pid name"."""
        import psutil

        out = {}
        try:
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    out[f"{p.pid} {p.name()}"] = p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return out


@contextmanager
def served(cmd: list[str], env: dict[str, str], *, url: str, probe: str, log_path: Path, what: str,
           startup_timeout_s: float, poll_s: float = 1.0, stop_grace_s: float = 20.0,
           startup_grace_s: float = 5.0, leader_only: bool = True) -> Iterator[Server]:
    """Runs cmd as its own process group until url+probe answers 200, yields it, then kills its tree.

    Args:
        what: the process's name in the errors (ServerFailed).
        stop_grace_s: SIGTERM to SIGKILL once it served (to the leader alone with leader_only).
        startup_grace_s: the same during start-up, to the whole group.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    ready = False
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise ServerFailed(f"{what} exited with {proc.returncode} during start-up; "
                                   f"last lines of {log_path}:\n{tail(log_path)}", proc.returncode, proc.pid)
            try:
                with urllib.request.urlopen(url + probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"{what} did not answer {probe} in {startup_timeout_s:.0f} s; "
                                   f"see {log_path}:\n{tail(log_path)}")
            time.sleep(poll_s)
        ready = True
        yield Server(url, proc.pid, log_path)
    finally:
        # NOTE: during start-up there is nothing to drain and no stats worth waiting for, and
        # vLLM busy in torch.compile took the whole 20 s grace to act on SIGTERM (measured:
        # Ctrl-C 60 s into `revati run`'s start-up unwound in 20.0 s): 5 s, then SIGKILL.
        kill_tree(proc, grace_s=stop_grace_s if ready else startup_grace_s, leader_only=ready and leader_only)
        log.close()
