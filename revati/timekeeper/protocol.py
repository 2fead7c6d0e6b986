"""Wire protocol between the shim's actors and the Timekeeper.

One AF_UNIX SOCK_SEQPACKET connection per actor (a thread of an emulated process; each
process's initial thread connects when the shim loads). A message is one packet: a one-byte
type, then a msgpack payload. The version is carried in the handshake. Mirrors the comment at
the top of shim/src/timewarp.c.

  HELLO   0x01  shim -> TK  [version, pid, tid]
  WELCOME 0x02  TK -> shim  [version, epoch]
  WAIT    0x03  shim -> TK  [seq, deadline_ns, kind]   virtual CLOCK_MONOTONIC deadline
  RUN     0x04  shim -> TK  [seq]                      wait seq ended on its own (event, signal,
                                                       real-time expiry)
  WAKE    0x05  TK -> shim  [seq, now_ns]              the clock jumped to this wait's deadline;
                                                       the actor is RUNNING again
  COMM    0x10  shim -> TK  [comm, nranks, rank]       this process is a rank of an NCCL comm
  ARRIVE  0x11  shim -> TK  [count, arrival * count]   collective arrivals, each
                            comm, chan, seq, op, participants, slot, duration_ns, b, nrefs,
                            (comm, chan, seq, a) * nrefs; it starts at max(b, end(ref) + a)
  RESOLVE 0x12  shim -> TK  [req, wait, (comm, chan, seq) * n]   ends wanted; wait=1: answer
                                                       once all are resolved
  RESOLVED 0x13 TK -> shim  [req, end * n]             virtual ns, -1 for not resolved yet
  ERROR   0x7F  TK -> shim  {"error": str, "code": str}, then the TK closes the connection

Comm ids are 64-bit hashes sent as signed integers. See revati/timekeeper/collectives.py.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

PROTOCOL_VERSION = 2


class MsgType(enum.IntEnum):
    HELLO = 0x01
    WELCOME = 0x02
    WAIT = 0x03
    RUN = 0x04
    WAKE = 0x05
    COMM = 0x10
    ARRIVE = 0x11
    RESOLVE = 0x12
    RESOLVED = 0x13
    ERROR = 0x7F


class WaitKind(enum.IntEnum):
    """What a WAITING actor waits on (shim/src/timewarp.h); the `kind` of the tie-break."""

    GPU = 0
    SLEEP = 1
    POLL = 2
    COND = 3
    SEM = 4
    YIELD = 5  # yield-spinning; deadline -1 (waits for another thread)


def encode(t: MsgType, payload: Any) -> bytes:
    return bytes((int(t),)) + msgpack.packb(payload, use_bin_type=True)


def decode(packet: bytes) -> tuple[int, Any]:
    """Returns (type, payload). Raises ValueError on an empty or undecodable packet."""
    if not packet:
        raise ValueError("empty packet")
    try:
        return packet[0], msgpack.unpackb(packet[1:], raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several exception types
        raise ValueError(f"bad msgpack payload: {e}") from e
