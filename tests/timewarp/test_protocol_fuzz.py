"""The Timekeeper's door: malformed messages from an actor's socket are refused (ERROR, then
the connection is closed), never reach the clock, and a well-formed process on the same clock
keeps its exact virtual time."""

from __future__ import annotations

import json
import socket
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revati.timekeeper.protocol import PROTOCOL_VERSION, MsgType, decode, encode
from revati.timekeeper.timekeeper import Timekeeper
from tests.timewarp._timewarp import finish, spawn

SLEEPS = r'''
import json, time
t0 = time.monotonic()
for _ in range(50):
    time.sleep(0.2)
print(json.dumps({"virtual_s": time.monotonic() - t0}))
'''

_ints = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
_junk = st.recursive(st.one_of(st.none(), st.booleans(), _ints, st.floats(), st.text(max_size=8),
                               st.binary(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=5),
                                             st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=12)
_types = st.sampled_from([int(t) for t in MsgType] + [0, 0x7E, 0xFF])
# A payload of the right shape with wrong values, or anything at all.
_shaped = st.lists(st.one_of(_ints, st.integers(-3, 3)), max_size=14)
packets = st.lists(st.one_of(
    st.builds(lambda t, b: bytes([t]) + msgpack.packb(b, use_bin_type=True), _types, st.one_of(_shaped, _junk)),
    st.binary(max_size=24)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def timekeeper_module():
    with Timekeeper() as tk:
        yield tk


def connect(tk) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(tk.sock_path)
    s.settimeout(5)
    return s


def hello(s: socket.socket, pid: int = 1, tid: int = 1) -> None:
    s.send(encode(MsgType.HELLO, [PROTOCOL_VERSION, pid, tid]))
    t, body = decode(s.recv(4096))
    assert t == MsgType.WELCOME and body[0] == PROTOCOL_VERSION


def refused(s: socket.socket, packet: bytes, code: str) -> None:
    s.send(packet)
    t, body = decode(s.recv(4096))
    assert (t, body["code"]) == (MsgType.ERROR, code), body
    assert s.recv(4096) == b""  # then the Timekeeper closed the connection


def test_malformed_messages_are_refused_and_a_good_process_keeps_exact_time(timekeeper):
    good = spawn(timekeeper, SLEEPS)
    cases = [
        (encode(MsgType.WAIT, {"seq": 1}), "bad_payload"),  # a map, not a list: was a TypeError in the loop
        (encode(MsgType.WAIT, [1, -5, 1]), "bad_payload"),  # a deadline before -1
        (encode(MsgType.WAIT, [1, 2.5, 1]), "bad_payload"),
        (encode(MsgType.WAIT, [1, 10, 1, 4]), "bad_payload"),
        (encode(MsgType.FREEZE, [7]), "bad_payload"),
        (encode(MsgType.COMM, [1, 2, 5]), "bad_payload"),  # rank beyond nranks
        (encode(MsgType.ARRIVE, [1, 1, 0, 0, 0, 2, 0, 10, 0]), "bad_payload"),  # an arrival cut short
        (encode(MsgType.ARRIVE, [1, 1, 0, 0, 0, 2, 0, 10, 0, 3]), "bad_payload"),  # nrefs beyond the packet
        (encode(MsgType.RESOLVE, [1, 0, 5, 5]), "bad_payload"),
        (encode(MsgType.RESOLVE, [1, 0, [5], 5, 5]), "bad_payload"),  # a list as a key: unhashable
        (encode(0x55, [1]), "bad_type"),
        (b"\x03\xc1", "bad_msgpack"),
    ]
    for packet, code in cases:
        with connect(timekeeper) as s:
            hello(s)
            refused(s, packet, code)
    with connect(timekeeper) as s:  # a HELLO of another protocol version
        refused(s, encode(MsgType.HELLO, [PROTOCOL_VERSION + 1, 1, 1]), "version")
    with connect(timekeeper) as s:  # "forever" as a deadline is accepted, and capped
        hello(s)
        s.send(encode(MsgType.WAIT, [1, 2 ** 63 - 1, 1]))
        s.send(encode(MsgType.RUN, [1]))
    (out,) = finish(good, timeout=120)
    assert 10.0 <= json.loads(out)["virtual_s"] < 10.05
    assert timekeeper.stats.refused == len(cases) + 1
    assert timekeeper._thread.is_alive()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(packets=packets)
def test_any_packets_leave_the_timekeeper_answering(timekeeper_module, packets):
    """Random packets after a HELLO: each connection ends refused or still open; either way the
    Timekeeper's loop lives and a fresh actor still gets its WELCOME."""
    poke(timekeeper_module, packets)


def poke(tk, packets: list[bytes]) -> None:
    """Sends packets as an actor that said HELLO; then the Timekeeper's loop must live and a
    fresh actor get its WELCOME (benchmarks/fuzz_protocols.py runs this 10^5 times)."""
    with connect(tk) as s:
        hello(s, pid=1, tid=2)
        for p in packets:
            try:
                s.send(p)
            except OSError:
                break  # refused and closed already
        time.sleep(0.001)
    assert tk._thread.is_alive(), "the Timekeeper's loop died"
    with connect(tk) as s:
        hello(s, pid=1, tid=3)
