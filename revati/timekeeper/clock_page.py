"""Python mirror of the shared-memory clock page (shim/src/clock_page.h).

The Timekeeper creates the page and is its only writer. Every emulated process maps it and
reads ``V = (R - r0_ns) * 1e6 / dilation_ppm + offset_ns`` under a seqlock. The layout is ABI:
tests/timewarp/test_clock_page.py checks this mirror against the C header.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0x4B434F4C43565254  # b"TRVCLOCK" read as a little-endian u64
LAYOUT_VERSION = 2
PAGE_SIZE = 4096
SOCK_MAX = 108
FLAG_ACTIVE = 1

# name -> (offset, struct format); the order and widths of shim/src/clock_page.h.
FIELDS: dict[str, tuple[int, str]] = {
    "magic": (0, "<Q"),
    "layout_version": (8, "<I"),
    "flags": (12, "<I"),
    "seq": (16, "<Q"),
    "r0_ns": (24, "<q"),
    "offset_ns": (32, "<q"),
    "dilation_ppm": (40, "<q"),
    "realtime_delta_ns": (48, "<q"),
    "boottime_delta_ns": (56, "<q"),
    "epoch": (64, "<Q"),
    "jumped_ns": (72, "<q"),
    "timekeeper_pid": (80, "<i"),
    "protocol_version": (84, "<I"),
    "sock_path": (88, f"{SOCK_MAX}s"),
    "pad0": (196, "<I"),
    "base_dilation_ppm": (200, "<q"),
    "reserved": (208, f"{PAGE_SIZE - 208}s"),
}


def field_size(name: str) -> int:
    return struct.calcsize(FIELDS[name][1])


@dataclass(frozen=True)
class Snapshot:
    r0_ns: int
    offset_ns: int
    dilation_ppm: int

    def virtual(self, real_ns: int) -> int:
        """Virtual monotonic ns at real monotonic ns."""
        d = real_ns - self.r0_ns
        if self.dilation_ppm != 1_000_000:
            d = d * 1_000_000 // self.dilation_ppm
        return d + self.offset_ns


# A frozen clock runs this many times slower than its rate: a second of real time is a
# microsecond of virtual time at dilation 1. NOTE: not infinite, so every formula stays finite;
# the shim saturates real spans (rv_clock_real_span) so long timeouts do not overflow.
FROZEN_FACTOR = 1_000_000


def real_ns_now() -> int:
    """The real CLOCK_MONOTONIC. NOTE: the Timekeeper never runs under the shim, so this is real."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class ClockPage:
    """A mapped clock page. The creating side (writer=True) owns and unlinks the file."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = False):
        self.path = Path(path)
        self.writer = writer
        self._wlock = threading.Lock()  # the Timekeeper's jumps and the governor's re-anchors
        self._held: "tuple[int, Snapshot] | None" = None  # hold(): (seq before, the mapping)
        self._frozen = 0  # freeze() depth
        self._rate_ppm = 0  # the rate set_dilation asked for (0: the page's)
        fd = os.open(self.path, os.O_RDWR if writer else os.O_RDONLY)
        try:
            self._mm = mmap.mmap(fd, PAGE_SIZE, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writer else 0))
        finally:
            os.close(fd)

    @classmethod
    def create(cls, path: str | os.PathLike, *, sock_path: str, protocol_version: int,
               dilation: float = 1.0, start_ns: int | None = None,
               realtime_delta_ns: int | None = None) -> "ClockPage":
        """Creates the page with V equal to the real monotonic clock now (offset = r0), or to
        start_ns (a relay's page starts at its coordinator's virtual time, whose realtime delta
        it takes too, so every host reads the same virtual clocks)."""
        p = Path(path)
        if len(sock_path.encode()) >= SOCK_MAX:
            raise ValueError(f"socket path longer than {SOCK_MAX - 1} bytes: {sock_path}")
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # owner-only (docs/security.md)
        try:
            os.ftruncate(fd, PAGE_SIZE)
        finally:
            os.close(fd)
        page = cls(p, writer=True)
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        page._put("seq", 1)
        page._put("layout_version", LAYOUT_VERSION)
        page._put("r0_ns", mono)
        page._put("offset_ns", mono if start_ns is None else start_ns)
        page._put("dilation_ppm", int(round(dilation * 1_000_000)))
        page._put("base_dilation_ppm", int(round(dilation * 1_000_000)))
        page._put("realtime_delta_ns", rt - mono if realtime_delta_ns is None else realtime_delta_ns)
        page._put("boottime_delta_ns", boot - mono)
        page._put("timekeeper_pid", os.getpid())
        page._put("protocol_version", protocol_version)
        page._put("sock_path", sock_path.encode())
        page._put("flags", FLAG_ACTIVE)
        page._put("seq", 2)
        page._put("magic", MAGIC)  # last: a reader that sees the magic sees a complete page
        return page

    def _put(self, name: str, value) -> None:
        off, fmt = FIELDS[name]
        struct.pack_into(fmt, self._mm, off, value)

    def get(self, name: str):
        off, fmt = FIELDS[name]
        v = struct.unpack_from(fmt, self._mm, off)[0]
        return v.rstrip(b"\0").decode() if name == "sock_path" else v

    def snapshot(self) -> Snapshot:
        while True:
            a = self.get("seq")
            if a & 1:
                continue
            s = Snapshot(self.get("r0_ns"), self.get("offset_ns"), self.get("dilation_ppm"))
            if self.get("seq") == a:
                return s

    def now_ns(self) -> int:
        """Virtual monotonic ns now."""
        return self.snapshot().virtual(real_ns_now())

    def jump_to(self, target_ns: int) -> int:
        """Moves offset so that V == target_ns now, if that is forward. Returns the skip (ns).

        NOTE: the stores below are ordered on x86-64 (TSO); readers retry on an odd or changed
        seq, so a torn 8-byte store is never used.
        """
        assert self.writer
        with self._wlock:
            s = self.snapshot()
            now = s.virtual(real_ns_now())
            skip = target_ns - now
            if skip <= 0:
                return 0
            seq = self.get("seq")
            self._put("seq", seq + 1)
            self._put("offset_ns", s.offset_ns + skip)
            self._put("epoch", self.get("epoch") + 1)
            self._put("jumped_ns", self.get("jumped_ns") + skip)
            self._put("seq", seq + 2)
            return skip

    def anchor(self, r0_ns: int, offset_ns: int) -> int:
        """Sets V = (R - r0_ns) / dilation + offset_ns from now on, if that is forward of V now
        (else leaves the page as it is). Returns the skip (ns). A relay places a jump this way:
        the result does not depend on when it runs, unlike jump_to(a value computed earlier)."""
        assert self.writer
        with self._wlock:
            s = self.snapshot()
            r = real_ns_now()
            d = r - r0_ns
            if s.dilation_ppm != 1_000_000:
                d = d * 1_000_000 // s.dilation_ppm
            skip = d + offset_ns - s.virtual(r)
            if skip <= 0:
                return 0
            seq = self.get("seq")
            self._put("seq", seq + 1)
            self._put("r0_ns", r0_ns)
            self._put("offset_ns", offset_ns)
            self._put("epoch", self.get("epoch") + 1)
            self._put("jumped_ns", self.get("jumped_ns") + skip)
            self._put("seq", seq + 2)
            return skip

    def hold(self) -> None:
        """Makes the page unreadable (its seq odd) until release(): every reader, in every
        process, waits. A relay holds its host's page while a cross-host jump is decided, so no
        thread can read the old time after another host has moved on (coordinator.py)."""
        assert self.writer
        with self._wlock:
            if self._held is not None:
                return
            seq = self.get("seq")
            self._held = (seq, self.snapshot_unlocked())
            self._put("seq", seq + 1)

    def release(self, r0_ns: int | None = None, offset_ns: int | None = None) -> int:
        """Ends hold(); with (r0_ns, offset_ns), first moves the page as anchor() does (forward
        only). Returns the skip (ns)."""
        assert self.writer
        with self._wlock:
            if self._held is None:
                return 0
            seq, s = self._held
            self._held = None
            skip = 0
            if r0_ns is not None:
                r = real_ns_now()
                d = r - r0_ns
                if s.dilation_ppm != 1_000_000:
                    d = d * 1_000_000 // s.dilation_ppm
                skip = d + offset_ns - s.virtual(r)
                if skip > 0:
                    self._put("r0_ns", r0_ns)
                    self._put("offset_ns", offset_ns)
                    self._put("epoch", self.get("epoch") + 1)
                    self._put("jumped_ns", self.get("jumped_ns") + skip)
                else:
                    skip = 0
            self._put("seq", seq + 2)
            return skip

    @property
    def held(self) -> bool:
        return self._held is not None

    def snapshot_unlocked(self) -> Snapshot:
        """The mapping as stored, for the writer (which knows no write is under way)."""
        return Snapshot(self.get("r0_ns"), self.get("offset_ns"), self.get("dilation_ppm"))

    def set_dilation(self, dilation_ppm: int) -> None:
        """Re-anchors the clock at now (V continues without a step) and runs it at dilation_ppm
        from here on; never below the base dilation the page was created with. While the clock
        is frozen (freeze()) the rate is kept and applied at the last thaw()."""
        assert self.writer
        dilation_ppm = max(int(dilation_ppm), self.get("base_dilation_ppm"))
        with self._wlock:
            self._rate_ppm = dilation_ppm
            if self._frozen:
                return
            self._write_dilation(dilation_ppm)

    def rate_ppm(self) -> int:
        """The running rate (what set_dilation last asked for), frozen or not."""
        return self._rate_ppm or self.get("dilation_ppm")

    @property
    def frozen(self) -> bool:
        return self._frozen > 0

    def freeze(self) -> None:
        """Stops the clock (re-anchored without a step; it then runs at 1 / FROZEN_FACTOR of
        real speed), until as many thaw() calls. Jumps still move it."""
        assert self.writer
        with self._wlock:
            self._frozen += 1
            if self._frozen == 1:
                if not self._rate_ppm:
                    self._rate_ppm = self.get("dilation_ppm")
                self._write_dilation(self._rate_ppm * FROZEN_FACTOR)

    def thaw(self) -> None:
        assert self.writer
        with self._wlock:
            if self._frozen == 0:
                return
            self._frozen -= 1
            if self._frozen == 0:
                self._write_dilation(self._rate_ppm)

    def _write_dilation(self, dilation_ppm: int) -> None:
        """Under _wlock: re-anchors at now and runs at dilation_ppm."""
        s = self.snapshot()
        if dilation_ppm == s.dilation_ppm:
            return
        seq = self.get("seq")
        self._put("seq", seq + 1)
        r = real_ns_now()  # after seq is odd: see rv_clock_page_now in the C header
        v = s.virtual(r)
        self._put("r0_ns", r)
        self._put("offset_ns", v)
        self._put("dilation_ppm", dilation_ppm)
        self._put("seq", seq + 2)

    def close(self, *, unlink: bool | None = None) -> None:
        if self.writer:
            self._put("flags", 0)
        self._mm.close()
        if unlink if unlink is not None else self.writer:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
