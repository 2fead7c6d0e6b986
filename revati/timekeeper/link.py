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
MAX_FRAME = 64 << 20  # a joined peer's frames (an ARRIVE of many ranks is large)
HANDSHAKE_FRAME = 4096  # a peer's frames before it has proved the deployment's secret
SEND_TIMEOUT_S = 5.0  # a peer that stops reading is dropped after this, not waited on forever
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
    small) for at most SEND_TIMEOUT_S; receives are non-blocking and return every complete frame
    read so far.

    A frame over max_frame or one that does not decode ends the link (the stream cannot be
    trusted past it): closed is set and error says why."""

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME):
        self.sock = sock
        sock.setblocking(True)
        # NOTE: SO_SNDTIMEO, not settimeout(): Python's timeout would make every receive below
        # poll for it first, MSG_DONTWAIT or not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT_S), 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame = max_frame
        self._buf = bytearray()
        self.closed = False
        self.error: str | None = None
        self._unsendable = False  # a send failed: the others are skipped (each could wait SO_SNDTIMEO)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, t: MsgType, payload) -> None:
        if self._unsendable:
            return
        body = encode(t, payload)
        try:
            self.sock.sendall(_FRAME.pack(len(body)) + body)
        except OSError:  # (a peer that stopped reading: after SO_SNDTIMEO)
            self.closed = self._unsendable = True

    def receive(self) -> list[tuple[int, object]]:
        """Frames available now; sets closed on EOF or on an error."""
        while not self.closed and len(self._buf) <= self.max_frame + 4:
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
        while len(self._buf) >= 4 and self.error is None:
            (n,) = _FRAME.unpack_from(self._buf)
            if n > self.max_frame:
                self.error = f"a frame of {n} bytes (at most {self.max_frame})"
                break
            if len(self._buf) < 4 + n:
                break
            frame = bytes(self._buf[4:4 + n])
            del self._buf[:4 + n]
            try:
                out.append(decode(frame))
            except ValueError as e:
                self.error = f"a bad frame: {e}"
        if self.error is not None:
            self.closed = True
            self._buf.clear()
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
