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
  R_HELLO    0x20 relay -> coord  [version, host name, nonce_r]   nonce: 32 random bytes
  R_CHALLENGE 0x32 coord -> relay [nonce_c, proof_c]   proof_c = HMAC of the deployment's secret over
                                                       both nonces (auth.py): the coordinator knows it
  R_AUTH     0x33 relay -> coord  [proof_r]            the relay's proof over both nonces and its name;
                                                       a wrong one: ERROR {"code": "auth"}, closed
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

The coordinator reads nothing from a peer before its R_AUTH checks out but R_HELLO then R_AUTH (in
frames of at most 4 KiB); after it, every message is checked by parse_relay_message, and a
message that fails gets ERROR (code bad_payload, bad_type, bad_order or version) and its host
is dropped. The relay checks the coordinator's messages with parse_coordinator_message.

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
    R_CHALLENGE = 0x32
    R_AUTH = 0x33
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


_TOKEN = (0, I64_MAX)
#: The messages a relay sends to the coordinator; any other type from a relay is bad_type.
RELAY_TYPES = frozenset({MsgType.R_HELLO, MsgType.R_AUTH, MsgType.R_QUIET, MsgType.R_BUSY, MsgType.R_READY,
                         MsgType.R_GONE, MsgType.R_COMM, MsgType.R_ARRIVE, MsgType.R_RESOLVE, MsgType.R_FREEZE,
                         MsgType.R_FROZEN})


def _deadline(v: int, what: str) -> int:
    return _within(v, -1, NS_MAX, what)


def _bytes(v: Any, n: int, what: str) -> bytes:
    if type(v) is not bytes or len(v) != n:
        raise PayloadError(f"{what} must be {n} bytes, got {v!r:.80}")
    return v


def parse_relay_message(t: int, body: Any) -> Any:
    """Checks the payload of a message from a relay to the coordinator (the R_* table above)
    before anything reads it. Returns the checked payload; raises PayloadError naming the
    message and field. Whether the message may come now (R_HELLO once, gpids of the sender's
    own host) is the coordinator's check."""
    if t == MsgType.R_HELLO:
        if type(body) is not list or len(body) != 3:
            raise PayloadError(f"R_HELLO: expected [version, host name, nonce], got {body!r:.200}")
        if type(body[0]) is not int:
            raise PayloadError(f"R_HELLO version must be an integer, got {body[0]!r:.40}")
        if type(body[1]) is not str or not 0 < len(body[1]) <= 253 or not body[1].isprintable():
            raise PayloadError(f"R_HELLO host name must be 1-253 printable characters, got {body[1]!r:.80}")
        _bytes(body[2], 32, "R_HELLO nonce")
    elif t == MsgType.R_AUTH:
        if type(body) is not list or len(body) != 1:
            raise PayloadError(f"R_AUTH: expected [proof], got {body!r:.200}")
        _bytes(body[0], 32, "R_AUTH proof")
    elif t == MsgType.R_QUIET:
        seen, firm, lazy = _ints(body, "R_QUIET [seen, firm, lazy]", exact=3)
        _within(seen, 0, I64_MAX, "R_QUIET seen")
        _deadline(firm, "R_QUIET firm")
        _deadline(lazy, "R_QUIET lazy")
    elif t == MsgType.R_BUSY:
        if body != []:
            raise PayloadError(f"R_BUSY: expected [], got {body!r:.200}")
    elif t == MsgType.R_READY:
        token, ok = _ints(body, "R_READY [token, ok]", exact=2)
        _within(token, *_TOKEN, "R_READY token")
        _within(ok, 0, 1, "R_READY ok")
    elif t == MsgType.R_GONE:
        (gpid,) = _ints(body, "R_GONE [gpid]", exact=1)
        _within(gpid, 1, I64_MAX, "R_GONE gpid")
    elif t == MsgType.R_COMM:
        gpid, _, nranks, rank = _ints(body, "R_COMM [gpid, comm, nranks, rank]", exact=4)
        _within(gpid, 1, I64_MAX, "R_COMM gpid")
        _within(nranks, 1, 1 << 20, "R_COMM nranks")
        _within(rank, 0, nranks - 1, "R_COMM rank")
    elif t == MsgType.R_ARRIVE:
        if type(body) is not list or len(body) != 2:
            raise PayloadError(f"R_ARRIVE: expected [gpid, ARRIVE payload], got {body!r:.200}")
        _within(_ints(body[:1], "R_ARRIVE gpid", exact=1)[0], 1, I64_MAX, "R_ARRIVE gpid")
        parse_actor_message(MsgType.ARRIVE, body[1])
    elif t == MsgType.R_RESOLVE:
        b = _ints(body, "R_RESOLVE [gpid, rid, wait, (comm, chan, seq) * n]", least=3)
        _within(b[0], 1, I64_MAX, "R_RESOLVE gpid")
        _within(b[2], 0, 1, "R_RESOLVE wait")
        if (len(b) - 3) % 3:
            raise PayloadError(f"R_RESOLVE: {len(b) - 3} key fields, not a multiple of 3")
    elif t == MsgType.R_FREEZE:
        (delta,) = _ints(body, "R_FREEZE [delta]", exact=1)
        _within(delta, -1, 1, "R_FREEZE delta")
    elif t == MsgType.R_FROZEN:
        token, now = _ints(body, "R_FROZEN [token, now_ns]", exact=2)
        _within(token, *_TOKEN, "R_FROZEN token")
        _within(now, 0, NS_MAX, "R_FROZEN now_ns")
    else:
        raise PayloadError(f"message type {t} is not one a relay sends")
    return body


def parse_coordinator_message(t: int, body: Any) -> Any:
    """Checks the payload of a message from the coordinator to a relay, as parse_relay_message."""
    if t in (MsgType.R_PREPARE, MsgType.R_ABORT, MsgType.R_FREEZE_ALL):
        _ints(body, f"{MsgType(t).name} [token]", exact=1)
    elif t in (MsgType.R_JUMP, MsgType.R_THAW):
        _, v, _ = _ints(body, f"{MsgType(t).name} [token, v_ns, realtime_ns]", exact=3)
        _within(v, 0, NS_MAX, f"{MsgType(t).name} v_ns")
    elif t == MsgType.R_RESOLVED:
        b = _ints(body, "R_RESOLVED [rid, end * n]", least=1)
        if len(b) > 1 and min(b[1:]) < -1:
            raise PayloadError(f"R_RESOLVED: an end before -1: {b!r:.200}")
    elif t == MsgType.R_DEADLOCK:
        if type(body) is not list or len(body) != 1 or type(body[0]) is not str:
            raise PayloadError(f"R_DEADLOCK: expected [message], got {body!r:.200}")
    elif t == MsgType.R_CHALLENGE:
        if type(body) is not list or len(body) != 2:
            raise PayloadError(f"R_CHALLENGE: expected [nonce, proof], got {body!r:.200}")
        _bytes(body[0], 32, "R_CHALLENGE nonce")
        _bytes(body[1], 32, "R_CHALLENGE proof")
    elif t == MsgType.R_WELCOME:
        b = _ints(body, "R_WELCOME", exact=7)
        _within(b[2], 0, NS_MAX, "R_WELCOME now_ns")
        _within(b[6], 1, I64_MAX, "R_WELCOME dilation_ppm")
    elif t == MsgType.ERROR:
        if type(body) is not dict:
            raise PayloadError(f"ERROR: expected a map, got {body!r:.200}")
    else:
        raise PayloadError(f"message type {t} is not one the coordinator sends")
    return body


def decode(packet: bytes) -> tuple[int, Any]:
    """Returns (type, payload). Raises ValueError on an empty or undecodable packet."""
    if not packet:
        raise ValueError("empty packet")
    try:
        return packet[0], msgpack.unpackb(packet[1:], raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several exception types
        raise ValueError(f"bad msgpack payload: {e}") from e
