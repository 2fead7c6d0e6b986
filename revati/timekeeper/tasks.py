"""The scheduler state of the emulated threads, read for the Timekeeper's quiescence test.

Two readers: librevati_tk.so's scanner (rv_tk_scan, rv_tk_quiet: about 10x faster than Python),
and /proc files kept open and pread per sample, when the library is not built. describe_wait()
says what a blocked thread waits on, for deadlock reports.
"""

from __future__ import annotations

import ctypes
import logging
import os
from revati.launch import shim_api
from revati.launch.shim_api import TkScanner
from revati.timekeeper.actor import WAITING, Actor

log = logging.getLogger(__name__)

# Scheduler states of a thread that cannot make progress by itself: sleeping, idle, dead.
# NOTE: D (disk I/O) and T/t (stopped, e.g. under a debugger) hold the clock: they will go on.
IDLE_STATES = frozenset("SIZX")

Tasks = dict[tuple[int, int], tuple[str, int]]  # (pid, tid) -> (state letter, times it got a CPU)


_scanner: "TkScanner | bool | None" = None


def c_scanner() -> "TkScanner | None":
    """librevati_tk.so's rv_tk_scan and rv_tk_quiet (about 10x faster than reading /proc from
    Python; bound in revati/launch/shim_api.py), or None when it is not built."""
    global _scanner
    if _scanner is None:
        _scanner = False
        try:
            _scanner = shim_api.tk_scanner(cap=16384)
        except (OSError, AttributeError, RuntimeError):  # ShimNotBuiltError is a RuntimeError
            log.warning("timekeeper: librevati_tk.so not found; reading /proc from Python")
    return _scanner or None


def int32s(values: list[int]):
    """A ctypes int32 array of values, for the scanner's arguments."""
    return (ctypes.c_int32 * len(values))(*values)


class TaskReader:
    """Reads the scheduler state of threads through /proc files kept open (pread per sample)."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], tuple[int, int]] = {}
        self.schedstat = os.path.exists("/proc/self/schedstat")

    def read(self, pid: int, tid: int) -> tuple[str, int] | None:
        """(scheduler state letter, times the task got a CPU) of a thread, or None if it is gone."""
        key = (pid, tid)
        fds = self._fds.get(key)
        try:
            if fds is None:
                base = f"/proc/{pid}/task/{tid}"
                st = os.open(f"{base}/stat", os.O_RDONLY | os.O_CLOEXEC)
                ss = os.open(f"{base}/schedstat", os.O_RDONLY | os.O_CLOEXEC) if self.schedstat else -1
                fds = self._fds[key] = (st, ss)
            stat = os.pread(fds[0], 1024, 0)
            if not stat:
                raise ProcessLookupError
            r = stat.rindex(b")")
            state = chr(stat[r + 2])
            if fds[1] >= 0:
                runs = int(os.pread(fds[1], 128, 0).split()[2])
            else:  # kernels without schedstats: CPU ticks
                fields = stat[r + 2:].split()
                runs = int(fields[11]) + int(fields[12])
            return state, runs
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError, OSError):
            self.forget(key)
            return None

    def forget(self, key: tuple[int, int]) -> None:
        for fd in self._fds.pop(key, ()):
            if fd >= 0:
                os.close(fd)

    def keep_only(self, live: set[tuple[int, int]]) -> None:
        for key in [k for k in self._fds if k not in live]:
            self.forget(key)

    def close(self) -> None:
        self.keep_only(set())


def snapshot(pids: list[int], reader: TaskReader) -> Tasks | None:
    """Scheduler state of every thread of the processes pids; None if one is not idle."""
    scan = c_scanner()
    if scan is not None:
        arr = int32s(pids)
        n = scan.fn(arr, len(pids), scan.out, scan.cap)
        if n == -1:
            return None
        if n >= 0:
            o = scan.out
            return {(o[3 * i], o[3 * i + 1]): ("S", o[3 * i + 2]) for i in range(n)}
    tasks: Tasks = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue  # gone: its connections close shortly
        for t in tids:
            st = reader.read(pid, int(t))
            if st is None:
                continue
            if st[0] not in IDLE_STATES:
                return None
            tasks[(pid, int(t))] = st
    reader.keep_only(set(tasks))
    return tasks


def ran(prev: Tasks, tasks: Tasks, waiting_ids: set) -> bool:
    """Whether a thread that is not a WAITING actor got a CPU between two samples."""
    for key, (_, runs) in tasks.items():
        if key not in waiting_ids and (key not in prev or prev[key][1] != runs):
            return True
    return False


# x86-64 numbers of the syscalls a blocked thread is usually in.
_SYSCALLS = {0: "read", 1: "write", 7: "poll", 17: "pread64", 19: "readv", 23: "select", 35: "nanosleep",
             43: "accept", 45: "recvfrom", 47: "recvmsg", 61: "wait4", 202: "futex", 230: "clock_nanosleep",
             232: "epoll_wait", 247: "waitid", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait",
             288: "accept4", 299: "recvmmsg", 441: "epoll_pwait2", 34: "pause", 130: "rt_sigsuspend",
             128: "rt_sigtimedwait", 44: "sendto", 46: "sendmsg", 42: "connect", 72: "fcntl", 73: "flock"}
_FD_SYSCALLS = {0, 1, 17, 19, 43, 44, 45, 46, 47, 42, 232, 281, 288, 299, 441, 72, 73}
_WAIT_KINDS = {0: "GPU sync", 1: "sleep", 2: "poll timeout", 3: "condition variable", 4: "semaphore",
               5: "yield-spin (waits for another thread's write)"}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def describe_wait(pid: int, tid: int, actor: Actor | None = None) -> str:
    """One line: a thread's process, name, and what it waits on (from /proc, and its announced wait)."""
    base = f"/proc/{pid}/task/{tid}"
    pcomm, tcomm = _read(f"/proc/{pid}/comm"), _read(f"{base}/comm")
    sc = _read(f"{base}/syscall").split()
    what = "?"
    if sc and sc[0].lstrip("-").isdigit():
        nr = int(sc[0])
        name = _SYSCALLS.get(nr, f"syscall {nr}")
        what = name
        if nr in _FD_SYSCALLS and len(sc) > 1:
            fd = int(sc[1], 16)
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                target = "?"
            what = f"{name}(fd {fd} -> {target})"
        elif nr == 202 and len(sc) > 1:
            what = f"futex(0x{int(sc[1], 16):x})"
        elif nr in (7, 271) and len(sc) > 2:
            what = f"{name}({int(sc[2], 16)} fds)"
    elif sc:
        what = sc[0]
    wchan = _read(f"{base}/wchan")
    line = f"pid {pid} ({pcomm}) thread {tid} ({tcomm}): {what} [kernel: {wchan}]"
    if actor is not None and actor.state == WAITING:
        until = f" until {actor.deadline / 1e9:.6f} s" if actor.deadline >= 0 else ""
        line += f"; announced wait: {_WAIT_KINDS.get(actor.kind, actor.kind)}{until}"
    return line
