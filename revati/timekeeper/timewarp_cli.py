"""What `revati exec --timewarp` prints about the deployment clock (kept out of cli.py)."""

from __future__ import annotations

import atexit
import sys
import time


def open_clock(args, clock):
    """Announces the clock a command runs on; the owner prints the clock's totals at exit."""
    from revati.timekeeper.timekeeper import Timekeeper

    if not isinstance(clock, Timekeeper):
        print(f"revati: time warp: joined the deployment clock {clock.page_path} "
              f"(Timekeeper pid {clock.timekeeper_pid})", file=sys.stderr)
        return clock
    print(f"revati: time warp: deployment clock {clock.page_path} (dilation {clock.dilation:g}); "
          f"other commands join it with `revati exec --clock {clock.page_path}`", file=sys.stderr)
    wall0, virt0 = time.monotonic(), clock.now_ns()

    def summary() -> None:
        if clock.page is None or clock.stopped:
            return
        wall = time.monotonic() - wall0
        virt = (clock.now_ns() - virt0) / 1e9
        st = clock.stats
        print(f"revati: time warp: {virt:.3f} virtual s in {wall:.3f} wall s "
              f"({virt / wall if wall else 0:.2f} virtual s per wall s); {st.jumps} jumps "
              f"({st.jumps / wall if wall else 0:.0f}/s) skipping {st.jumped_ns / 1e9:.3f} s; "
              f"{st.processes_seen} processes, {st.actors_seen} actors"
              + (f"; {clock.collectives.resolved} collectives resolved across ranks ({st.arrive_msgs} "
                 f"ARRIVE messages, {st.resolve_waits} RESOLVE waits, {st.resolve_asks} answered at once); {st.aborted_jumps} jumps voided by late messages"
                 if clock.collectives.resolved else ""), file=sys.stderr)

    atexit.register(summary)
    return clock


DEADLOCK_EXIT = 3


def exit_code(clock, rc: int) -> int:
    """The exit status of `revati exec`: DEADLOCK_EXIT when the Timekeeper found a deadlock."""
    if getattr(clock, "deadlock", None):
        print(f"revati: time warp: the run was stopped on a deadlock (exit {DEADLOCK_EXIT}); "
              "the waiting threads are listed above", file=sys.stderr)
        return DEADLOCK_EXIT
    return rc


def dilation(arg: str | None) -> float:
    """The value of --dilation: 1 when absent, a positive number, or `auto` (calibrate.py)."""
    if arg is None:
        return 1.0
    if arg == "auto":
        from revati.timekeeper.calibrate import auto_dilation

        try:
            d, why = auto_dilation()
        except LookupError as e:
            print(f"revati exec: {e}", file=sys.stderr)
            raise SystemExit(2)
        print(f"revati: time warp: {why}", file=sys.stderr)
        return d
    try:
        d = float(arg)
    except ValueError:
        d = -1.0
    if not d > 0:
        print(f"revati exec: --dilation takes a positive number or auto, not {arg!r}", file=sys.stderr)
        raise SystemExit(2)
    return d
