"""The coordinator's door (issue 15): only a peer that proves the deployment's secret joins the
clock; malformed, unknown, replayed and out-of-order messages get ERROR and their peer is dropped
with a log line naming its address; a well-formed host on the same clock keeps jumping with
causal times. The long fuzz: benchmarks/fuzz_protocols.py --protocol coordinator."""

from __future__ import annotations

import logging
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings

from revati.timekeeper import auth
from revati.timekeeper.coordinator import Coordinator
from revati.timekeeper.link import Link, global_pid
from revati.timekeeper.protocol import PROTOCOL_VERSION, MsgType
from revati.timekeeper.relay import Relay
from tests.timewarp.coordinator_fuzz import (
    SECRET, Harness, frame, handshake, poke_authenticated, poke_unauthenticated, pre_auth, read_all, sessions)


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    h.stop()


def _session(addr, data: list[bytes], joined: bool) -> tuple[list, bool]:
    """Sends data (after a proper handshake if joined), closes our side; (frames, eof)."""
    if joined:
        s, welcome, _ = handshake(addr)
        data = [d(welcome[1]) if callable(d) else d for d in data]
    else:
        s = socket.create_connection(addr, timeout=5)
    for d in data:
        s.sendall(d)
    s.shutdown(socket.SHUT_WR)
    try:
        return read_all(s)
    finally:
        s.close()


def test_a_relay_with_the_secret_joins_and_one_without_it_is_refused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="revati.timekeeper.coordinator")
    for d in "abc":
        (tmp_path / d).mkdir()
    with Coordinator(("127.0.0.1", 0), secret=SECRET, deadlock_s=None) as coord:
        with Relay(coord.address, run_dir=tmp_path / "a", name="a", secret=SECRET, connect_timeout_s=10) as relay:
            assert relay.connected and relay.host_id == 1 and coord.hosts == ["a"]
        # A wrong secret: the relay sees that the coordinator's proof does not match ...
        with pytest.raises(ConnectionError, match="did not prove the deployment's secret"):
            Relay(coord.address, run_dir=tmp_path / "b", secret=b"another-secret-0123456789", connect_timeout_s=5).start()
        # ... and a peer that answers the challenge anyway is refused, by address.
        s = socket.create_connection(coord.address, timeout=5)
        port = s.getsockname()[1]
        nonce = auth.new_nonce()
        s.sendall(frame(MsgType.R_HELLO, [PROTOCOL_VERSION, "intruder", nonce]))
        (t, (cnonce, _)), = _frames_until(s, 1)
        s.sendall(frame(MsgType.R_AUTH, [auth.proof(b"another-secret-0123456789", "relay", cnonce, nonce, b"intruder")]))
        frames, eof = read_all(s)
        s.close()
        assert eof and [(t, b["code"]) for t, b in frames] == [(MsgType.ERROR, "auth")]
        assert coord.hosts == [] and coord.stats.refused >= 1
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"at 127.0.0.1:{port}: host 'intruder' did not prove the deployment's secret" in m for m in lines), lines
    # No secret at all: refused before anything is sent.
    with pytest.raises(ConnectionError, match="no secret"):
        Relay(("127.0.0.1", 1), run_dir=tmp_path / "c", connect_timeout_s=0.2).start()


def _frames_until(s: socket.socket, n: int) -> list:
    link, out, t0 = Link(s), [], time.monotonic()
    while len(out) < n and time.monotonic() - t0 < 5:
        out += link.receive()
        time.sleep(0.001)
    s.setblocking(True)
    return out


def _hello(name: str = "x", nonce: bytes | None = None) -> bytes:
    return frame(MsgType.R_HELLO, [PROTOCOL_VERSION, name, nonce or auth.new_nonce()])


CASES = [
    # before the handshake
    ("a message before R_HELLO", False, [frame(MsgType.R_QUIET, [0, 5, -1])], "bad_order"),
    ("a JUMP sent to the coordinator first", False, [frame(MsgType.R_JUMP, [1, 2, 3])], "bad_order"),
    ("an unknown type first", False, [frame(0x7E, [])], "bad_order"),
    ("a wrong version", False, [frame(MsgType.R_HELLO, [PROTOCOL_VERSION + 1, "x", auth.new_nonce()])], "version"),
    ("a HELLO without a nonce (an older relay)", False, [frame(MsgType.R_HELLO, [PROTOCOL_VERSION, "x"])],
     "bad_payload"),
    ("a name that is a map", False, [frame(MsgType.R_HELLO, [PROTOCOL_VERSION, {"a": 1}, auth.new_nonce()])],
     "bad_payload"),
    ("AUTH before HELLO", False, [frame(MsgType.R_AUTH, [b"\0" * 32])], "bad_order"),
    ("a wrong proof", False, [_hello(), frame(MsgType.R_AUTH, [b"\0" * 32])], "auth"),
    ("a proof of the wrong length", False, [_hello(), frame(MsgType.R_AUTH, [b"\0" * 31])], "bad_payload"),
    ("two HELLOs", False, [_hello(), _hello()], "bad_order"),
    ("a huge length", False, [struct.pack(">I", 2 ** 31) + b"\x20"], "bad_frame"),
    ("a frame over 4 KiB before the handshake", False, [frame(MsgType.R_HELLO, ["x" * 5000])], "bad_frame"),
    ("bad msgpack", False, [struct.pack(">I", 3) + b"\x20\xc1\xc1"], "bad_frame"),
    ("an empty frame", False, [struct.pack(">I", 0)], "bad_frame"),
    # after it (the colleague's weak spot: these ended the coordinator's loop)
    ("QUIET as a map", True, [frame(MsgType.R_QUIET, {"seen": 0})], "bad_payload"),
    ("QUIET with a string", True, [frame(MsgType.R_QUIET, [0, "5", -1])], "bad_payload"),
    ("READY with no fields", True, [frame(MsgType.R_READY, [])], "bad_payload"),
    ("ARRIVE cut short", True, [lambda h: frame(MsgType.R_ARRIVE, [global_pid(h, 1), [1, 1, 0, 0]])], "bad_payload"),
    ("RESOLVE with a list as a key", True, [lambda h: frame(MsgType.R_RESOLVE, [global_pid(h, 1), 1, 0, [5], 5, 5])],
     "bad_payload"),
    ("COMM of another host's process", True, [lambda h: frame(MsgType.R_COMM, [global_pid(h + 7, 1), 1, 2, 0])],
     "bad_payload"),
    ("GONE of another host's process", True, [lambda h: frame(MsgType.R_GONE, [global_pid(h + 7, 1)])], "bad_payload"),
    ("FREEZE by 5", True, [frame(MsgType.R_FREEZE, [5])], "bad_payload"),
    ("a deadline past 2^62", True, [frame(MsgType.R_QUIET, [0, 2 ** 62 + 1, -1])], "bad_payload"),
    ("a coordinator's message sent to it", True, [frame(MsgType.R_JUMP, [1, 2, 3])], "bad_type"),
    ("an unknown type", True, [frame(0x7E, [1])], "bad_type"),
    ("a second HELLO", True, [_hello("again")], "bad_order"),
    ("a huge length after joining", True, [struct.pack(">I", 2 ** 31) + b"\x22"], "bad_frame"),
]


@pytest.mark.parametrize("what,joined,data,code", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_message_gets_its_error_and_the_peer_is_dropped(harness, what, joined, data, code):
    before = harness.coord.stats.refused
    frames, eof = _session(harness.coord.address, data, joined)
    assert eof, "not dropped"
    assert [(t, b.get("code")) for t, b in frames if t == MsgType.ERROR] == [(MsgType.ERROR, code)], frames
    assert frames[-1][0] == MsgType.ERROR  # nothing after it
    assert harness.coord.stats.refused == before + 1
    harness.sessions += 1
    harness.check(every=1)  # the loop lives; the good host still jumps, causally


def test_a_replayed_handshake_does_not_join(harness):
    """A recorded HELLO + AUTH of a host that did join, sent again: the new challenge differs."""
    frames, eof = _session(harness.coord.address, harness.replay, joined=False)
    assert eof and [t for t, _ in frames] == [MsgType.R_CHALLENGE, MsgType.ERROR] and frames[1][1]["code"] == "auth"


def test_a_silent_peer_is_dropped_after_the_handshake_timeout():
    with Coordinator(("127.0.0.1", 0), secret=SECRET, handshake_s=0.3) as coord:
        s = socket.create_connection(coord.address, timeout=5)
        t0 = time.monotonic()
        frames, eof = read_all(s, timeout=5)
        s.close()
        assert eof and 0.3 <= time.monotonic() - t0 < 3
        assert [b.get("code") for _, b in frames] == ["timeout"]


def test_stale_tokens_are_ignored(harness):
    """READY and FROZEN with tokens of rounds long gone (replayed): no error, no effect."""
    addr = harness.coord.address
    frames, eof = _session(addr, [frame(MsgType.R_READY, [0, 1]), frame(MsgType.R_FROZEN, [0, 5]),
                                  frame(MsgType.R_READY, [2 ** 40, 0]),
                                  lambda h: frame(MsgType.R_RESOLVE, [global_pid(h, 1), 9, 0])], joined=True)
    assert eof and frames == [(MsgType.R_RESOLVED, [9])]
    harness.sessions += 1
    harness.check(every=1)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(items=pre_auth)
def test_any_input_before_the_handshake_never_joins(harness, items):
    harness.record(poke_unauthenticated(harness.coord.address, items, harness.replay))
    harness.check()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(items=sessions)
def test_any_session_of_a_joined_peer_leaves_the_clock_going(harness, items):
    harness.record(poke_authenticated(harness.coord.address, items))
    harness.check()
