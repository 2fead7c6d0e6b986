"""A Python DEALER client of the sidecar (tests, benchmarks and tools)."""

from __future__ import annotations

from typing import Any, Sequence

import zmq

from revati.sidecar.protocol import PROTOCOL_VERSION, MsgType, pack, type_frame, unpack


class SidecarError(RuntimeError):
    """The sidecar answered ERROR, or did not answer in time."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class SidecarClient:
    """Talks to a sidecar over a DEALER socket.

    Args:
        endpoint: ZeroMQ endpoint, e.g. ipc:///tmp/revati.sock or tcp://127.0.0.1:5555.
        timeout_s: how long a request waits for its reply.
    """

    def __init__(self, endpoint: str, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "SidecarClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_frames(self, frames: Sequence[bytes]) -> list[bytes]:
        """Sends raw frames and returns the raw reply frames (for protocol tests)."""
        self._sock.send_multipart(list(frames))
        if not self._sock.poll(self.timeout_ms, zmq.POLLIN):
            raise SidecarError(f"no reply from {self.endpoint} within {self.timeout_ms} ms",
                               "timeout")
        return self._sock.recv_multipart()

    def request(self, t: MsgType, payload: Any) -> Any:
        reply = self.send_frames([type_frame(t), pack(payload)])
        if len(reply) != 2 or len(reply[0]) != 1:
            raise SidecarError(f"malformed reply with {len(reply)} frames", "bad_frames")
        body = unpack(reply[1])
        if reply[0][0] == MsgType.ERROR:
            raise SidecarError(body.get("error", "error"), body.get("code", ""))
        return body

    def hello(self, gpu: str | None = None) -> dict[str, Any]:
        """Handshake: checks the protocol version (and the GPU, if given)."""
        return self.request(MsgType.HELLO, {"version": PROTOCOL_VERSION, "gpu": gpu})

    def predict(self, ops: Sequence[dict]) -> list[float]:
        """Predicted microseconds of each op descriptor."""
        return self.request(MsgType.PREDICT, {"ops": list(ops)})["us"]

    def stats(self) -> dict[str, Any]:
        return self.request(MsgType.STATS, {})
