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
  FREEZE  0x06  shim -> TK  [delta]                    +1: stop the clock while this process
                                                       does one-off work (a Triton JIT compile),
                                                       -1: done; nests, undone when it exits
          0x06  shim -> TK  [delta, 1]                 a hold: the same, and no jump while any
                                                       hold is in force (the shim's own work in
                                                       an emulated thread: a sidecar miss)
  COMM    0x10  shim -> TK  [comm, nranks, rank]       this process is a rank of an NCCL comm
  ARRIVE  0x11  shim -> TK  [count, arrival * count]   collective arrivals, each
                            comm, chan, seq, op, participants, slot, duration_ns, b, nrefs,
                            (comm, chan, seq, a) * nrefs; it starts at max(b, end(ref) + a)
  RESOLVE 0x12  shim -> TK  [req, wait, (comm, chan, seq) * n]   ends wanted; wait=1: answer
                                                       once all are resolved
  RESOLVED 0x13 TK -> shim  [req, end * n]             virtual ns, -1 for not resolved yet
  ERROR   0x7F  TK -> shim  {"error": str, "code": str}, then the TK closes the connection

Between a host's Relay and the deployment's Coordinator (relay.py, coordinator.py), over TCP, each message
framed by a 4-byte big-endian length. gpid = host_id << 22 | pid.
  R_HELLO    0x20 relay -> coord  [version, host name]
  R_WELCOME  0x21 coord -> relay  [version, host_id, virtual now_ns, realtime of now_ns, realtime_delta_ns,
                                   boottime_delta_ns, dilation_ppm]
  R_QUIET    0x22 relay -> coord  [seen, firm, lazy]   the host is quiescent; its earliest firm and
                                                       lazy deadlines (-1: none); seen = R_JUMP and
                                                       R_RESOLVED messages it has handled
  R_BUSY     0x23 relay -> coord  []                   the last R_QUIET no longer holds
  R_PREPARE  0x24 coord -> relay  [token]              confirm with a fresh sample
  R_READY    0x25 relay -> coord  [token, ok]
  R_READY    (ok: the relay holds its clock page, readers wait, until R_JUMP or R_ABORT)
  R_JUMP     0x26 coord -> relay  [token, target_ns, realtime_ns]   every host's clock reads target
                                                       at real time realtime_ns; release, wake the due
  R_ABORT    0x2D coord -> relay  [token]              release the page unmoved
  R_GONE     0x27 relay -> coord  [gpid]               a process left
  R_COMM     0x28 relay -> coord  [gpid, comm, nranks, rank]
  R_ARRIVE   0x29 relay -> coord  [gpid, ARRIVE payload]
  R_RESOLVE  0x2A relay -> coord  [gpid, rid, wait, (comm, chan, seq) * n]
  R_RESOLVED 0x2B coord -> relay  [rid, end * n]
  R_DEADLOCK 0x2C coord -> relay  [message]            the deployment is deadlocked: report, kill
  R_FREEZE   0x2E relay -> coord  [delta]              a process here took (+1) or dropped (-1)
                                                       a FREEZE; the coordinator sums the hosts'
  R_FREEZE_ALL 0x2F coord -> relay [token]             freeze your page where it stands, answer
  R_FROZEN   0x30 relay -> coord  [token, now_ns]      frozen, at this virtual time
  R_THAW     0x31 coord -> relay  [token, v_ns, realtime_ns]  run again: every host's clock
                                                       reads v_ns at real time realtime_ns (v_ns
                                                       = the latest frozen time of any host)

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
    FREEZE = 0x06
    COMM = 0x10
    ARRIVE = 0x11
    RESOLVE = 0x12
    RESOLVED = 0x13
    R_HELLO = 0x20
    R_WELCOME = 0x21
    R_QUIET = 0x22
    R_BUSY = 0x23
    R_PREPARE = 0x24
    R_READY = 0x25
    R_JUMP = 0x26
    R_GONE = 0x27
    R_COMM = 0x28
    R_ARRIVE = 0x29
    R_RESOLVE = 0x2A
    R_RESOLVED = 0x2B
    R_DEADLOCK = 0x2C
    R_ABORT = 0x2D
    R_FREEZE = 0x2E
    R_FREEZE_ALL = 0x2F
    R_FROZEN = 0x30
    R_THAW = 0x31
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


I64_MAX = (1 << 63) - 1
# Virtual nanoseconds a deadline, start or duration may hold: 2^62 ns is 146 years, and a sum of
# two stays within the clock page's int64.
NS_MAX = 1 << 62


_WAIT, _RUN = int(MsgType.WAIT), int(MsgType.RUN)


class PayloadError(ValueError):
    """A message of a known type whose payload is not what protocol.py says it is."""


def _ints(body: Any, what: str, *, exact: int | None = None, least: int = 0) -> list[int]:
    """body as a list of int64 integers (bools are not), of exactly `exact` or at least `least`."""
    if type(body) is not list or (exact is not None and len(body) != exact) or len(body) < least:
        n = exact if exact is not None else f">= {least}"
        raise PayloadError(f"{what}: expected a list of {n} integers, got {body!r:.200}")
    if body and (set(map(type, body)) != {int} or min(body) < -I64_MAX or max(body) > I64_MAX):
        raise PayloadError(f"{what}: every field must be an int64 integer, got {body!r:.200}")
    return body


def _within(v: int, lo: int, hi: int, what: str) -> int:
    if not lo <= v <= hi:
        raise PayloadError(f"{what} must be in [{lo}, {hi}], got {v}")
    return v


def parse_actor_message(t: int, body: Any) -> Any:
    """Checks the payload of a message from a shim's actor (the table above) before anything
    reads it, so that a malformed one is refused at the door and cannot reach the clock.

    Returns the payload (the checked list). Raises PayloadError naming the message and field.
    """
    # NOTE: the hot path, on the Timekeeper's wake-up path (whose delay is virtual time): a
    # well-formed WAIT or RUN in ~0.2 us (plain int compares, no enum, no set).
    if type(body) is list:
        if t == _WAIT and len(body) == 3:
            seq, deadline, kind = body
            if type(seq) is int and type(deadline) is int and type(kind) is int and \
                    -1 <= deadline <= I64_MAX and -I64_MAX <= seq <= I64_MAX and 0 <= kind <= I64_MAX:
                return body
        elif t == _RUN and len(body) == 1 and type(body[0]) is int and -I64_MAX <= body[0] <= I64_MAX:
            return body
    if t == MsgType.WAIT:
        seq, deadline, kind = _ints(body, "WAIT [seq, deadline_ns, kind]", exact=3)
        _within(deadline, -1, I64_MAX, "WAIT deadline_ns")  # (the Timekeeper caps it at NS_MAX)
    elif t == MsgType.RUN:
        _ints(body, "RUN [seq]", least=1)
    elif t == MsgType.HELLO:
        if type(body) is list and body and body[0] != PROTOCOL_VERSION:
            return body  # the version check answers it
        _, pid, tid = _ints(body[:3] if type(body) is list else body, "HELLO [version, pid, tid]", exact=3)
        _within(pid, 1, 1 << 31, "HELLO pid")
        _within(tid, 1, 1 << 31, "HELLO tid")
    elif t == MsgType.FREEZE:
        b = _ints(body, "FREEZE [delta, hold?]", least=1)
        _within(len(b), 1, 2, "FREEZE's field count")
        _within(b[0], -1, 1, "FREEZE delta")
    elif t == MsgType.COMM:
        comm, nranks, rank = _ints(body, "COMM [comm, nranks, rank]", exact=3)
        _within(nranks, 1, 1 << 20, "COMM nranks")
        _within(rank, 0, nranks - 1, "COMM rank")
    elif t == MsgType.ARRIVE:
        b = _ints(body, "ARRIVE [count, arrival * count]", least=1)
        count, i = _within(b[0], 0, len(b), "ARRIVE count"), 1
        for _ in range(count):
            if i + 9 > len(b):
                raise PayloadError(f"ARRIVE: arrival at {i} is cut short ({len(b)} fields)")
            _, _, _, _, nparts, slot, dur, start, nrefs = b[i:i + 9]
            _within(nparts, 1, 1 << 20, "ARRIVE participants")
            _within(slot, 0, nparts - 1, "ARRIVE slot")
            _within(dur, 0, NS_MAX, "ARRIVE duration_ns")
            _within(start, 0, NS_MAX, "ARRIVE b")
            _within(nrefs, 0, (len(b) - i - 9) // 4, "ARRIVE nrefs")
            for k in range(nrefs):
                _within(b[i + 9 + 4 * k + 3], 0, NS_MAX, "ARRIVE ref offset")
            i += 9 + 4 * nrefs
        if i != len(b):
            raise PayloadError(f"ARRIVE: {len(b) - i} fields after the last of {count} arrivals")
    elif t == MsgType.RESOLVE:
        b = _ints(body, "RESOLVE [req, wait, (comm, chan, seq) * n]", least=2)
        if (len(b) - 2) % 3:
            raise PayloadError(f"RESOLVE: {len(b) - 2} key fields, not a multiple of 3")
    return body


def decode(packet: bytes) -> tuple[int, Any]:
    """Returns (type, payload). Raises ValueError on an empty or undecodable packet."""
    if not packet:
        raise ValueError("empty packet")
    try:
        return packet[0], msgpack.unpackb(packet[1:], raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several exception types
        raise ValueError(f"bad msgpack payload: {e}") from e
