"""The TCP link between a host's Relay and the deployment's Coordinator, and the names that are
unique across hosts.

A link carries frames of a 4-byte big-endian length and a protocol.encode()d message. Pids
repeat between hosts (pods), so the coordinator names a process by a *global pid*: its host id
above PID_BITS, its pid below.
"""

from __future__ import annotations

import logging
import socket
import struct
import time

from revati.timekeeper.protocol import MsgType, decode, encode

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">I")
_MAX_FRAME = 64 << 20
PID_BITS = 22  # Linux pid_max is at most 2^22: a host's pid fits below its host id


def global_pid(host_id: int, pid: int) -> int:
    """A pid unique across hosts (pids repeat between pods)."""
    return (host_id << PID_BITS) | pid


def split_pid(gpid: int) -> tuple[int, int]:
    return gpid >> PID_BITS, gpid & ((1 << PID_BITS) - 1)


def realtime_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC (ns), from the tightest of a few paired reads (a read
    preempted between its two clocks would misplace every jump by the preemption)."""
    best = None
    for _ in range(5):
        m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, rt - (m0 + m1) // 2)
    return best[1]


def parse_address(text: str, default_port: int = 7070) -> tuple[str, int]:
    """HOST:PORT (or HOST) -> (host, port); raises ValueError with what was wrong."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not host:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 < p < 65536:
        raise ValueError(f"{text!r}: the port must be in 1..65535")
    return host.strip("[]"), p


class Link:
    """One TCP connection carrying length-prefixed protocol messages. Sends block (messages are
    small); receives are non-blocking and return every complete frame read so far."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, t: MsgType, payload) -> None:
        body = encode(t, payload)
        try:
            self.sock.sendall(_FRAME.pack(len(body)) + body)
        except OSError:
            self.closed = True

    def receive(self) -> list[tuple[int, object]]:
        """Frames available now; sets closed on EOF or on an error."""
        while True:
            try:
                chunk = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._buf += chunk
        out = []
        while len(self._buf) >= 4:
            (n,) = _FRAME.unpack_from(self._buf)
            if n > _MAX_FRAME:
                self.closed = True
                break
            if len(self._buf) < 4 + n:
                break
            frame = bytes(self._buf[4:4 + n])
            del self._buf[:4 + n]
            try:
                out.append(decode(frame))
            except ValueError as e:
                log.warning("link: dropped a bad frame: %s", e)
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
