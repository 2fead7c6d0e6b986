"""The clock a local process tree runs on: this process's Timekeeper, or one that another
command owns (`revati exec --clock PATH`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from revati.timekeeper.timekeeper import Timekeeper

_timekeeper: "Timekeeper | JoinedClock | None" = None


class JoinedClock:
    """The clock of a Timekeeper that another process runs (one deployment, several trees)."""

    def __init__(self, path: str | os.PathLike, timekeeper_pid: int):
        self.page_path = Path(path)
        self.timekeeper_pid = timekeeper_pid

    def env(self) -> dict[str, str]:
        return {"REVATI_TIMEWARP": "1", "REVATI_CLOCK": str(self.page_path)}


def _live_clock_pid(path: Path) -> int | None:
    """The Timekeeper pid of a clock page whose Timekeeper is alive, else None."""
    from revati.timekeeper.clock_page import FLAG_ACTIVE, MAGIC, ClockPage

    try:
        page = ClockPage(path)
    except (OSError, ValueError):
        return None
    try:
        pid = page.get("timekeeper_pid")
        live = page.get("magic") == MAGIC and page.get("flags") & FLAG_ACTIVE
    finally:
        page.close()
    if not live:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid

def shared_timekeeper(clock: str | os.PathLike | None = None, dilation: float = 1.0,
                      host_contention: str = "compensate") -> "Timekeeper | JoinedClock":
    """This process's Timekeeper, started on first use and stopped at exit.

    With clock (a clock page path), process trees started by different commands share one
    deployment clock: the first one starts the Timekeeper with its page at that path, the
    others join it while its Timekeeper lives (`revati exec --clock PATH`).
    dilation: CPU work counts 1/dilation of its wall time (the owner's choice; joiners share it).
    host_contention: "compensate" runs the owner's clock under the contention governor.
    """
    global _timekeeper
    if _timekeeper is None:
        import atexit

        from revati.timekeeper.timekeeper import Timekeeper

        if clock is not None:
            path = Path(clock)
            pid = _live_clock_pid(path)
            if pid is not None:
                _timekeeper = JoinedClock(path, pid)
                return _timekeeper
            path.unlink(missing_ok=True)  # a stale page left by a Timekeeper that died
        _timekeeper = Timekeeper(page_path=clock, dilation=dilation).start()
        atexit.register(_timekeeper.stop)
        if host_contention == "compensate":
            from revati.timekeeper.governor import start_for

            atexit.register(start_for(_timekeeper).stop)  # runs before the Timekeeper stops
    return _timekeeper
