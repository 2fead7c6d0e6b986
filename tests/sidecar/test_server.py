"""The sidecar protocol over a real ROUTER socket, garbage included."""

import msgpack
import pytest

from revati.predictor import Predictor
from revati.sidecar import PROTOCOL_VERSION, MsgType, SidecarClient, SidecarError, SidecarServer


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    ep = f"ipc://{tmp_path_factory.mktemp('sc')}/sidecar.sock"
    server = SidecarServer(ep, predictor=Predictor.load("h100-sxm")).start_in_thread()
    yield ep
    server.shutdown()
    server.shutdown()  # idempotent


@pytest.fixture
def client(endpoint):
    with SidecarClient(endpoint, timeout_s=10) as c:
        yield c


def test_hello_and_predict(client):
    h = client.hello("h100-sxm")
    assert h["version"] == PROTOCOL_VERSION and h["gpu"] == "h100-sxm"
    assert "gemm" in h["model"]["families"]
    us = client.predict([{"op": "gemm", "m": 512, "n": 8192, "k": 8192},
                         {"op": "memcpy", "bytes": 1 << 20, "direction": "h2d"}])
    assert len(us) == 2 and all(u > 0 for u in us)
    st = client.stats()
    assert st["predictor"]["ops"] >= 2 and st["server"]["messages"] >= 3


def test_handshake_errors(client):
    with pytest.raises(SidecarError) as e:
        client.request(MsgType.HELLO, {"version": 999, "gpu": None})
    assert e.value.code == "version"
    with pytest.raises(SidecarError) as e:
        client.hello("a100-80gb-sxm")
    assert e.value.code == "gpu"


@pytest.mark.parametrize("frames, code", [
    ([b"\x02"], "bad_frames"),
    ([b"\x02", b"x", b"y"], "bad_frames"),
    ([b"\x55", msgpack.packb({})], "bad_type"),
    ([b"\x02\x02", msgpack.packb({})], "bad_type"),
    ([b"\x02", b"\xc1\xff garbage"], "bad_msgpack"),
    ([b"\x02", msgpack.packb({"ops": 5})], "bad_payload"),
    ([b"\x02", msgpack.packb({"ops": [{"op": "gemm", "m": 1, "n": 2}]})], "bad_op"),
    ([b"\x02", msgpack.packb({"ops": [None]})], "bad_op"),
    ([b"\x01", msgpack.packb([1, 2])], "bad_payload"),
])
def test_garbage_gets_error_and_server_survives(client, frames, code):
    reply = client.send_frames(frames)
    assert reply[0] == bytes([MsgType.ERROR])
    body = msgpack.unpackb(reply[1])
    assert body["code"] == code and body["error"]
    # still answering
    assert client.predict([{"op": "norm", "tokens": 8, "hidden": 4096}])[0] > 0


def test_bad_op_error_names_field(client):
    with pytest.raises(SidecarError, match=r"ops\[1\].*'k'"):
        client.predict([{"op": "gemm", "m": 1, "n": 1, "k": 1}, {"op": "gemm", "m": 1, "n": 1}])


def test_many_clients_and_request_id(endpoint):
    clients = [SidecarClient(endpoint) for _ in range(4)]
    try:
        for i, c in enumerate(clients):
            r = c.request(MsgType.PREDICT, {"id": i, "ops": [{"op": "gemm", "m": i + 1,
                                                              "n": 4096, "k": 4096}]})
            assert r["id"] == i and len(r["us"]) == 1
    finally:
        for c in clients:
            c.close()


def test_bad_op_in_a_mixed_batch_names_the_first_bad_index(client):
    # the batched validation redoes a failing batch op by op: the first bad op is named
    ops = [{"op": "norm", "tokens": 8, "hidden": 4096},
           {"op": "collective", "kind": "all_reduce", "bytes": 1024, "ranks": 8},
           {"op": "attention", "phase": "decode", "batch_size": 2, "kv_len_sum": 100,
            "num_heads": 8, "head_dim": 128},
           {"op": "norm", "tokens": -1, "hidden": 4096},
           {"op": "gemm", "m": 1, "n": 1}]
    with pytest.raises(SidecarError, match=r"ops\[3\].*'tokens'"):
        client.predict(ops)
    assert len(client.predict(ops[:3])) == 3
