"""Fuzzing the coordinator/relay TCP protocol (coordinator.py's door): a scripted well-formed host
that must keep jumping with causal virtual times, the generators of hostile peers, and the
check of one peer's session. tests/timewarp/test_coordinator_fuzz.py runs a short fuzz in CI,
benchmarks/fuzz_protocols.py --protocol coordinator the long one."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import msgpack
from hypothesis import strategies as st

from revati.timekeeper import auth
from revati.timekeeper.coordinator import Coordinator
from revati.timekeeper.link import Link, global_pid
from revati.timekeeper.protocol import PROTOCOL_VERSION, MsgType, decode, encode

MS = 1_000_000
SECRET = b"fuzz-secret-" + b"0123456789abcdef" * 2
EOF_S = 5.0  # a peer that has closed its side must be answered and dropped within this


def frame(t: int, body) -> bytes:
    b = bytes([t]) + msgpack.packb(body, use_bin_type=True)
    return struct.pack(">I", len(b)) + b


def read_all(sock: socket.socket, timeout: float = EOF_S) -> tuple[list[tuple[int, object]], bool]:
    """Frames until EOF; (frames, whether EOF came within timeout)."""
    buf, deadline = bytearray(), time.monotonic() + timeout
    eof = False
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            break
        except OSError:  # reset by the coordinator: as good as EOF
            eof = True
            break
        if not chunk:
            eof = True
            break
        buf += chunk
    out = []
    while len(buf) >= 4:
        (n,) = struct.unpack_from(">I", buf)
        if len(buf) < 4 + n:
            break
        out.append(decode(bytes(buf[4:4 + n])))
        del buf[:4 + n]
    return out, eof


def handshake(addr, secret: bytes = SECRET, name: str = "fuzz") -> tuple[socket.socket, list, list]:
    """A peer that proves the secret: (socket, WELCOME payload, the frames it sent)."""
    s = socket.create_connection(addr, timeout=EOF_S)
    nonce = auth.new_nonce()
    sent = [frame(MsgType.R_HELLO, [PROTOCOL_VERSION, name, nonce])]
    s.sendall(sent[0])
    link = Link(s)
    got: list = []
    deadline = time.monotonic() + EOF_S
    while time.monotonic() < deadline and not link.closed:
        for t, body in link.receive():
            if t == MsgType.R_CHALLENGE:
                sent.append(frame(MsgType.R_AUTH, [auth.proof(secret, "relay", body[0], nonce, name.encode())]))
                s.sendall(sent[-1])
            elif t == MsgType.R_WELCOME:
                s.setblocking(True)
                return s, body, sent
            else:
                got.append((t, body))
        time.sleep(0.0005)
    s.close()
    raise AssertionError(f"no WELCOME for a peer with the secret: {got}")


TOLERANCE_NS = 200_000  # realtime anchors are computed per message, from paired clock reads


@dataclass
class GoodHost:
    """A well-formed relay, scripted: always quiet with a firm deadline 1 ms after its last wake,
    it confirms every PREPARE and applies every JUMP. Between jumps the clock runs at dilation 1
    from the last anchor (target at its realtime), so each JUMP's skip is known. Causality: no
    skip may move the clock back, nor forward past the host's deadline (it would have slept
    through it)."""

    addr: tuple[str, int]
    secret: bytes = SECRET
    wakes: int = 0
    jumps: int = 0
    errors: list[str] = field(default_factory=list)
    deadlock: str | None = None

    def start(self) -> "GoodHost":
        self.sock, welcome, _ = handshake(self.addr, self.secret, "good")
        self.host_id = welcome[1]
        self.anchor = (welcome[2], welcome[3])  # virtual ns at realtime ns
        self.link = Link(self.sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="good-host")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.link.close()

    def now(self) -> int:
        v, rt = self.anchor
        return v + time.clock_gettime_ns(time.CLOCK_REALTIME) - rt

    def _run(self) -> None:
        seen, deadline, frozen = 0, self.now() + MS, False
        self.link.send(MsgType.R_QUIET, [seen, deadline, -1])
        while not self._stop.is_set() and not self.link.closed:
            for t, body in self.link.receive():
                if t == MsgType.R_PREPARE:
                    self.link.send(MsgType.R_READY, [body[0], 1])
                    continue
                if t == MsgType.R_FREEZE_ALL:
                    frozen = True
                    self.link.send(MsgType.R_FROZEN, [body[0], self.now()])
                    continue
                if t == MsgType.R_DEADLOCK:
                    self.deadlock = body[0]
                    continue
                if t == MsgType.ERROR:
                    self.errors.append(f"ERROR to the good host: {body}")
                    continue
                if t not in (MsgType.R_JUMP, MsgType.R_THAW, MsgType.R_RESOLVED, MsgType.R_ABORT):
                    self.errors.append(f"unexpected message {t}")
                    continue
                if t == MsgType.R_ABORT:
                    continue
                seen += 1  # JUMP, THAW and RESOLVED count
                if t == MsgType.R_JUMP:
                    v, rt = body[1], body[2]
                    skip = v - (self.anchor[0] + rt - self.anchor[1])
                    if frozen:
                        self.errors.append("a JUMP while frozen")
                    elif skip < -TOLERANCE_NS:
                        self.errors.append(f"a jump moved virtual time back by {-skip} ns")
                    elif skip > TOLERANCE_NS and v > deadline:
                        self.errors.append(f"a jump to {v} skipped past the good host's deadline {deadline}")
                    self.anchor = (v, rt)
                    self.jumps += 1
                elif t == MsgType.R_THAW:
                    if body[1] < self.anchor[0]:
                        self.errors.append(f"a thaw moved virtual time back: {self.anchor[0]} -> {body[1]}")
                    frozen, self.anchor = False, (body[1], body[2])
                if self.now() >= deadline - TOLERANCE_NS:
                    self.wakes += 1
                    deadline = self.now() + MS
                self.link.send(MsgType.R_QUIET, [seen, deadline, -1])
            time.sleep(0.0002)

    def wait_for_wakes(self, more: int, timeout: float = 20.0) -> bool:
        goal, t0 = self.wakes + more, time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.wakes >= goal or self.deadlock or self.link.closed:
                break
            time.sleep(0.005)
        return self.wakes >= goal


# --- generators --------------------------------------------------------------------------

_ints = st.one_of(st.integers(-3, 3), st.integers(-(2 ** 63), 2 ** 64 - 1),
                  st.sampled_from([2 ** 62, 2 ** 62 + 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 31]))
_junk = st.recursive(st.one_of(st.none(), st.booleans(), _ints, st.floats(), st.text(max_size=8),
                               st.binary(max_size=40)),
                     lambda inner: st.one_of(st.lists(inner, max_size=5),
                                             st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=12)
_types = st.one_of(st.sampled_from([int(t) for t in MsgType if t.name.startswith("R_") or t == MsgType.ERROR]),
                   st.sampled_from([int(t) for t in MsgType] + [0, 0x7E, 0xFF]))
_shaped = st.lists(_ints, max_size=12)


def _framed(t, body) -> bytes:
    return frame(t, body)


def _gpid_payload(host_id_slot: list):
    """Messages whose first field is a gpid, well shaped, for this peer's host (host_id_slot[0]
    is filled in once the peer has joined) or another one."""
    return st.one_of(
        st.builds(lambda pid, c, n, r: (MsgType.R_COMM, [pid, c, n, r]), st.integers(1, 100), _ints,
                  st.integers(0, 4), st.integers(-1, 4)),
        st.builds(lambda pid, body: (MsgType.R_ARRIVE, [pid, body]), st.integers(1, 100), _shaped),
        st.builds(lambda pid, rid, w, keys: (MsgType.R_RESOLVE, [pid, rid, w, *keys]), st.integers(1, 100),
                  _ints, st.integers(-1, 2), st.lists(st.integers(0, 3), max_size=7)),
        st.builds(lambda pid: (MsgType.R_GONE, [pid]), st.integers(1, 100)),
    )


# One item of an authenticated peer's session: a framed message of any type with any payload, a
# well-shaped one with edge values, a message with a gpid, a replayed token, or raw bytes
# (cut frames, huge lengths).
_valued = st.one_of(
    st.builds(lambda s, f, z: (MsgType.R_QUIET, [s, f, z]), st.integers(-1, 3), _ints, _ints),
    st.builds(lambda tok, ok: (MsgType.R_READY, [tok, ok]), st.integers(-1, 50), st.integers(-1, 2)),
    st.builds(lambda tok, v: (MsgType.R_FROZEN, [tok, v]), st.integers(-1, 50), _ints),
    st.builds(lambda d: (MsgType.R_FREEZE, [d]), st.integers(-2, 2)),
    st.just((MsgType.R_BUSY, [])),
    st.builds(lambda n: (MsgType.R_HELLO, [PROTOCOL_VERSION, "again", n]), st.binary(min_size=32, max_size=32)),
)
session_item = st.one_of(
    st.tuples(_types, st.one_of(_shaped, _junk)).map(lambda tb: ("msg", tb)),
    _valued.map(lambda tb: ("msg", tb)),
    _gpid_payload([0]).map(lambda tb: ("gpid", tb)),
    st.binary(min_size=1, max_size=24).map(lambda b: ("raw", b)),
    st.integers(5, 2 ** 32 - 1).map(lambda n: ("raw", struct.pack(">I", n) + b"\x22")),  # a length, cut short
)
# Before the handshake: anything at all, or a handshake gone wrong (a wrong secret, a replayed
# proof, a wrong version, a malformed HELLO, AUTH first, a second HELLO).
_pre_item = st.one_of(
    st.tuples(_types, st.one_of(_shaped, _junk)).map(lambda tb: frame(*tb)),
    st.binary(min_size=1, max_size=24),
    st.integers(4097, 2 ** 32 - 1).map(lambda n: struct.pack(">I", n)),
    st.builds(lambda v, name, n: frame(MsgType.R_HELLO, [v, name, n]),
              st.one_of(st.just(PROTOCOL_VERSION), _ints), st.one_of(st.text(max_size=300), _junk),
              st.one_of(st.binary(min_size=32, max_size=32), _junk)),
    st.builds(lambda p: frame(MsgType.R_AUTH, [p]), st.one_of(st.binary(min_size=32, max_size=32), _junk)),
)
pre_auth = st.lists(st.one_of(_pre_item, st.just("replay"), st.just("wrong-secret")), min_size=1, max_size=4)
sessions = st.lists(session_item, min_size=1, max_size=6)


@dataclass
class Outcome:
    codes: list[str] = field(default_factory=list)
    joined: bool = False
    answered: bool = False


def poke_unauthenticated(addr, items: list, replay: list[bytes]) -> Outcome:
    """A peer without the secret sends items; it must never join, must be answered and dropped
    once it closes its side (EOF_S), and no reply may say `internal`."""
    out = Outcome()
    s = socket.create_connection(addr, timeout=EOF_S)
    seen: list = []
    try:
        for it in items:
            if it == "replay":  # a recorded HELLO and AUTH of a host that did join
                data = b"".join(replay)
            elif it == "wrong-secret":
                data = _wrong_secret_hello(s, seen)
            else:
                data = it
            try:
                s.sendall(data)
            except OSError:
                break
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        frames, eof = read_all(s)
    finally:
        s.close()
    assert eof, f"the coordinator neither answered nor dropped a peer within {EOF_S} s: {items!r:.300}"
    for t, body in seen + frames:
        if t == MsgType.R_WELCOME:
            out.joined = True
        if t == MsgType.ERROR:
            out.codes.append(body.get("code"))
    assert not out.joined, f"a peer without the secret joined: {items!r:.300}"
    assert "internal" not in out.codes, f"an internal error: {frames!r:.300}"
    return out


def _wrong_secret_hello(s: socket.socket, seen: list) -> bytes:
    """A HELLO sent now; returns an AUTH made with a wrong secret over the challenge, if one came
    (b"" otherwise). Frames read on the way go to seen."""
    nonce = auth.new_nonce()
    try:
        s.sendall(frame(MsgType.R_HELLO, [PROTOCOL_VERSION, "intruder", nonce]))
    except OSError:
        return b""
    link, t0 = Link(s), time.monotonic()
    try:
        while time.monotonic() - t0 < EOF_S and not link.closed:
            for t, body in link.receive():
                seen.append((t, body))
                if t == MsgType.R_CHALLENGE and type(body) is list and len(body) == 2:
                    return frame(MsgType.R_AUTH, [auth.proof(b"not-the-secret-at-all", "relay", body[0], nonce,
                                                             b"intruder")])
            if seen:
                return b""
            time.sleep(0.0005)
        return b""
    finally:
        s.setblocking(True)


def poke_authenticated(addr, items: list) -> Outcome:
    """A peer that proved the secret sends items, then a probe (a RESOLVE without keys, answered
    at once). If every item was a whole frame, exactly one of these happens: the probe is
    answered, or an ERROR ends the session (and nothing follows it). Then it closes its side
    and must be dropped within EOF_S."""
    out = Outcome(joined=True)
    s, welcome, _ = handshake(addr)
    host = welcome[1]
    whole = True
    try:
        for kind, x in items:
            if kind == "raw":
                data, whole = x, False
            else:
                t, body = x
                if kind == "gpid" and body[0] <= 4:  # mostly this host's own processes
                    body = [global_pid(host, body[0]), *body[1:]]
                data = frame(t, body)
            try:
                s.sendall(data)
            except OSError:
                break
        try:
            s.sendall(frame(MsgType.R_RESOLVE, [global_pid(host, 1), 424242, 0]))
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        frames, eof = read_all(s)
    finally:
        s.close()
    assert eof, f"the coordinator neither answered nor dropped a joined peer within {EOF_S} s: {items!r:.300}"
    for i, (t, body) in enumerate(frames):
        if t == MsgType.ERROR:
            out.codes.append(body.get("code"))
            assert i == len(frames) - 1, f"messages after an ERROR: {frames!r:.300}"
        elif t == MsgType.R_RESOLVED and body == [424242]:
            out.answered = True
    assert "internal" not in out.codes, f"an internal error: {frames!r:.300}"
    if whole:
        assert out.answered != bool(out.codes), f"answered {out.answered}, errors {out.codes}: {items!r:.300}"
    return out


class Harness:
    """A coordinator with a good host; check() after each session: its loop lives, and the good
    host keeps jumping with causal times. A deadlock that fuzzed peers declared by the protocol's
    rules (a collective lacking a rank whose process left) restarts both, counted."""

    def __init__(self, handshake_s: float = 2.0):
        self.handshake_s = handshake_s
        self.restarts = 0
        self.sessions = 0
        self.codes: dict[str, int] = {}
        self._start()
        s, _, self.replay = handshake(self.coord.address)  # a recorded session, for replays
        s.close()
        self.wakes_before = 0

    def _start(self) -> None:
        self.coord = Coordinator(("127.0.0.1", 0), secret=SECRET, deadlock_s=None, handshake_s=self.handshake_s).start()
        self.good = GoodHost(self.coord.address).start()
        assert self.good.wait_for_wakes(3), "the good host does not jump"

    def stop(self) -> None:
        self.good.stop()
        self.coord.stop()

    def record(self, out: Outcome) -> None:
        self.sessions += 1
        for c in out.codes or ["answered" if out.answered else "closed"]:
            self.codes[c] = self.codes.get(c, 0) + 1

    def check(self, every: int = 25) -> None:
        assert self.coord._thread.is_alive(), "the coordinator's loop died"
        assert not self.good.errors, self.good.errors[:3]
        if self.coord.deadlock:
            assert "lacks rank" in self.coord.deadlock and "host 1 " not in self.coord.deadlock, self.coord.deadlock
            self.restarts += 1
            self.stop()
            self._start()
            return
        if self.sessions % every == 0:
            assert self.good.wait_for_wakes(2), (
                f"the good host stopped jumping (wakes {self.good.wakes}, hosts {self.coord.hosts}, "
                f"deadlock {self.coord.deadlock})")
