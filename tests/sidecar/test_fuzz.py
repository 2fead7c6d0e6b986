"""Fuzzing the sidecar's protocol: every message, however malformed, gets exactly one
well-formed reply, and the service keeps answering well-formed peers."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from revati.predictor import Predictor
from revati.sidecar import MsgType, SidecarClient, SidecarServer
from tests.sidecar.fuzz import VALID_OPS, messages

ERROR = bytes([MsgType.ERROR])


@pytest.fixture(scope="module")
def server():
    s = SidecarServer("inproc://unused", predictor=Predictor.load("h100-sxm"))
    yield s
    s.shutdown()


def check_reply(request: list[bytes], reply: list[bytes]) -> dict:
    """The reply's shape for any request: identity echoed, one type frame, a msgpack map."""
    assert reply[0] == b"peer"
    if request[:1] == [b""]:  # a REQ client's empty delimiter is echoed back
        assert reply[1] == b""
        request, reply = request[1:], reply[1:]
    assert len(reply) == 3, reply
    kind, payload = reply[1], msgpack.unpackb(reply[2], raw=False, strict_map_key=False)
    assert isinstance(payload, dict)
    if kind == ERROR:
        assert payload["code"] in ("bad_frames", "bad_type", "bad_msgpack", "bad_payload", "bad_op",
                                   "version", "gpu", "internal") and payload["error"]
        assert payload["code"] != "internal", payload  # every bad input is named, none crashes
    else:
        assert kind == request[0]
        if kind == bytes([MsgType.PREDICT]):
            # (0 us for an op of zero size: docs/predictor.md, "any zero -> 0 us")
            assert all(isinstance(u, float) and math.isfinite(u) and u >= 0 for u in payload["us"])
    return payload


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(messages)
def test_any_message_gets_one_wellformed_reply(server, frames):
    check_reply(frames, server.handle([b"peer", *frames]))


def test_a_good_peer_keeps_its_answers_beside_a_garbage_peer(tmp_path):
    """Over a real ROUTER socket: garbage from one client, then the good client's batch is
    answered with the same durations as before the garbage."""
    ep = f"ipc://{tmp_path}/s.sock"
    s = SidecarServer(ep, predictor=Predictor.load("h100-sxm")).start_in_thread()
    try:
        with SidecarClient(ep, timeout_s=10) as good, SidecarClient(ep, timeout_s=10) as bad:
            before = good.predict(VALID_OPS)
            for frames in ([b""], [b"\x02", b"\xdd\xff\xff\xff\xff"], [b"\x02"] * 7,
                           [b"\x02", msgpack.packb({"ops": [{"op": "gemm", "m": -1}]})]):
                assert bad.send_frames(frames)[-2] == ERROR  # [b""] reads as a REQ delimiter, echoed first
            assert good.predict(VALID_OPS) == before
    finally:
        s.shutdown()


def test_an_oversized_message_drops_only_its_peer(tmp_path, monkeypatch):
    """A peer that sends more than MAX_MESSAGE_BYTES is disconnected by ZeroMQ; a well-formed
    peer on the same socket is still answered."""
    import zmq

    from revati.sidecar import server as server_mod

    monkeypatch.setattr(server_mod, "MAX_MESSAGE_BYTES", 1 << 16)
    ep = f"ipc://{tmp_path}/s.sock"
    s = SidecarServer(ep, predictor=Predictor.load("h100-sxm")).start_in_thread()
    ctx = zmq.Context()
    hog = ctx.socket(zmq.DEALER)
    try:
        hog.setsockopt(zmq.LINGER, 0)
        hog.connect(ep)
        hog.send_multipart([bytes([MsgType.PREDICT]), b"\x00" * (1 << 17)])
        with SidecarClient(ep, timeout_s=10) as good:
            assert len(good.predict(VALID_OPS)) == len(VALID_OPS)
        assert hog.poll(1000) == 0  # no reply: the hog was dropped, not answered
        assert s.counters["messages"] == 1  # only the good peer's message got through
    finally:
        hog.close(0)
        ctx.term()
        s.shutdown()
