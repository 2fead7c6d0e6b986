"""The load generator as a process: its output to bench.log (and stdout), its progress, and
the load phase timed on the clocks the runner gives (revati.run.loadgen plans its arguments)."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from revati.launch.processes import kill_tree


START_MARK = b"Starting main benchmark run"
RESULT_MARK = b"Serving Benchmark Result"
_TQDM = re.compile(r"(\d+)/(\d+) \[")


class BenchTimeout(RuntimeError):
    pass


@dataclass
class BenchRun:
    rc: int
    bench: dict | None          # the result JSON (bench.json), when it was written
    virtual_s: float | None     # the load phase on the virtual clock, when there is one
    wall_s: float | None        # the load phase on the wall clock


@dataclass
class Progress:
    """What the bench output says so far; the times are (wall, virtual) of the clocks given."""

    done: int = 0
    total: int = 0
    started: tuple[float, float | None] | None = None   # "Starting main benchmark run..." seen
    finished: tuple[float, float | None] | None = None  # the result table seen


def parse_progress(text: str) -> tuple[int, int] | None:
    """The last tqdm count (done, total) in bench output."""
    last = None
    for m in _TQDM.finditer(text[-4000:]):
        last = m
    return (int(last.group(1)), int(last.group(2))) if last else None


def run_bench(command: list[str], env: dict[str, str], out: Path, timeout_s: float, *,
              clocks: Callable[[], tuple[float, float | None]], total: int = 0, echo: bool = False,
              on_tick: Callable[[Progress], None] | None = None, tick_s: float = 0.2,
              deadline_clock: Callable[[], float] = time.monotonic,
              on_start: Callable[[subprocess.Popen], None] | None = None) -> BenchRun:
    """Runs the load generator (command, its planned arguments included) as its own process
    group; its output goes to out/bench.log and its result is out/bench.json.

    The load phase runs from bench's "Starting main benchmark run" to its result table, timed
    on clocks() -> (wall seconds, virtual seconds or None).

    Args:
        echo: copy bench's lines to stdout (the last state of each tqdm line).
        on_tick: called with the progress at least every tick_s seconds.
        deadline_clock: the real clock of the timeout (under the shim, CLOCK_TAI).
        on_start: called with the process once it started (the runner's watchdog).
    Raises:
        BenchTimeout: it ran past timeout_s.
    """
    (out / "bench.json").unlink(missing_ok=True)
    prog = Progress(total=total)
    log = open(out / "bench.log", "wb")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0)
    text = b""
    pending = b""
    deadline = deadline_clock() + timeout_s
    try:
        if on_start is not None:
            on_start(proc)
        fd = proc.stdout.fileno()
        while True:
            if deadline_clock() > deadline:
                raise BenchTimeout(f"vllm bench serve ran past {timeout_s:g} s")
            ready, _, _ = select.select([fd], [], [], tick_s)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                text = (text + chunk)[-8192:]
                if prog.started is None and START_MARK in text:
                    prog.started = clocks()
                    text = text.split(START_MARK, 1)[1]
                if prog.started is not None:
                    p = parse_progress(text.decode(errors="replace"))
                    if p:
                        prog.done = p[0]
                    if prog.finished is None and RESULT_MARK in text:
                        prog.finished = clocks()
                if echo:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:  # tqdm redraws with \r: the last state of each line
                        sys.stdout.write(line.split(b"\r")[-1].decode(errors="replace") + "\n")
                    sys.stdout.flush()
            if on_tick is not None:
                on_tick(prog)
        rc = proc.wait()
    finally:
        kill_tree(proc, grace_s=5)
        log.close()
    if echo and pending.strip():
        print(pending.split(b"\r")[-1].decode(errors="replace"), flush=True)
    if on_tick is not None:
        on_tick(prog)
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else None
    a, b = prog.started, prog.finished
    virtual = (b[1] - a[1]) if a and b and a[1] is not None and b[1] is not None else None
    return BenchRun(rc, bench, virtual, (b[0] - a[0]) if a and b else None)
