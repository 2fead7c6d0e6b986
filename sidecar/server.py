"""The sidecar prediction service: one thread owns the ROUTER socket, and each request is
received, decoded, predicted and answered by it in turn.

NOTE: one thread, not an I/O thread beside a busy loop (the layout of vLLM's engine core, which
this service had first): predictions are serial anyway, and the two hand-offs between threads
(a queue, then an inproc socket back) cost more than the prediction. Measured with
`benchmarks/bench_sidecar.py --workloads latency --baseline DIR` (the sidecar in its own
process): a decode-attention round trip took a median 454 us with them and 298 us without,
where the prediction itself takes about 100 us. A shim cache miss waits one round trip.
Signal handlers only set the shutdown flag; the loop sees it within POLL_S. `shutdown()` is
idempotent. A malformed message (wrong frame count, bad msgpack, unknown type, bad op fields)
gets an ERROR reply and never stops the service.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from revati.predictor.descriptor import DESCRIPTOR_VERSION, DescriptorError, normalize_batch
from revati.predictor.predictor import Predictor
from revati.sidecar.protocol import (
    PROTOCOL_VERSION, MsgType, error_payload, pack, type_frame, unpack)

logger = logging.getLogger("revati.sidecar")

POLL_S = 0.1
# The largest message a peer may send; ZeroMQ drops the connection of a peer that sends more
# (a PREDICT batch of the shim is a few KiB; this bounds the memory one hostile peer can take).
MAX_MESSAGE_BYTES = 64 << 20
_ERROR = type_frame(MsgType.ERROR)


class SidecarServer:
    """One prediction service on one endpoint for one GPU.

    Args:
        endpoint: ZeroMQ endpoint to bind (ipc://... or tcp://host:port).
        gpu: GPU key whose models are loaded (ignored if `predictor` is given).
        predictor: an already loaded Predictor (tests).
    """

    def __init__(self, endpoint: str, gpu: str = "h100-sxm",
                 predictor: Predictor | None = None) -> None:
        self.endpoint = endpoint
        self.predictor = predictor or Predictor.load(gpu)
        self.gpu = self.predictor.gpu
        self._ctx = zmq.Context()
        self._router: zmq.Socket | None = None
        self._shutdown = threading.Event()
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self._loop_thread: threading.Thread | None = None
        self.counters = {"messages": 0, "errors": 0, "predicted_ops": 0}
        self._closed = False

    def start(self) -> None:
        """Binds the endpoint, in the thread that then runs `run_busy_loop` (a ZeroMQ socket
        stays in one thread)."""
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            router.bind(self.endpoint)
            if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
                os.chmod(self.endpoint[len("ipc://"):], 0o600)  # owner-only (docs/security.md)
        except zmq.ZMQError as e:
            router.close(0)
            raise RuntimeError(f"sidecar cannot bind {self.endpoint}: {e}") from e
        self._router = router

    def start_in_thread(self) -> "SidecarServer":
        """Binds and runs the busy loop in a background thread (tests, embedding)."""

        def run() -> None:
            try:
                self.start()
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                self._bind_error = e
                self._bound.set()
                return
            self._bound.set()
            self.run_busy_loop()

        self._loop_thread = threading.Thread(target=run, name="revati-sidecar-loop", daemon=True)
        self._loop_thread.start()
        self._bound.wait(10.0)
        if self._bind_error is not None:
            raise self._bind_error
        return self

    def run_busy_loop(self) -> None:
        """Takes requests until shutdown; each one gets exactly one reply. Closes the socket."""
        router = self._router
        assert router is not None, "start() first"
        try:
            while not self._shutdown.is_set():
                if router.poll(int(POLL_S * 1000), zmq.POLLIN):
                    router.send_multipart(self.handle(router.recv_multipart(copy=True)))
        finally:
            router.close(0)
            self._router = None

    def handle(self, frames: list[bytes]) -> list[bytes]:
        """Turns one received multipart message (identity first) into its reply frames."""
        self.counters["messages"] += 1
        ident = frames[:1]
        body = frames[1:]
        if body and body[0] == b"":  # a REQ client's delimiter: echo it back
            ident, body = frames[:2], frames[2:]
        try:
            reply = self._dispatch(body)
        except DescriptorError as e:
            reply = [_ERROR, error_payload("bad_op", str(e))]
        except Exception as e:  # NOTE: a bad message must never stop the service
            logger.exception("sidecar: internal error")
            reply = [_ERROR, error_payload("internal", f"{type(e).__name__}: {e}")]
        if reply[0] == _ERROR:
            self.counters["errors"] += 1
        return ident + reply

    def _dispatch(self, body: list[bytes]) -> list[bytes]:
        if len(body) != 2:
            return [_ERROR, error_payload(
                "bad_frames", f"expected 2 frames (type, msgpack payload), got {len(body)}")]
        tframe, payload = body
        if len(tframe) != 1 or tframe[0] not in (MsgType.HELLO, MsgType.PREDICT, MsgType.STATS):
            return [_ERROR, error_payload("bad_type", f"unknown message type frame {tframe!r}")]
        t = MsgType(tframe[0])
        try:
            msg = unpack(payload)
        except Exception as e:
            return [_ERROR, error_payload("bad_msgpack", f"payload is not msgpack: {e}")]
        if t is MsgType.PREDICT:
            ops = msg.get("ops") if isinstance(msg, dict) else msg
            if not isinstance(ops, list):
                return [_ERROR, error_payload("bad_payload",
                                              "PREDICT payload must be {'ops': [descriptor, ...]}")]
            try:
                parts = normalize_batch(ops)
            except DescriptorError as e:  # the message names the first bad op: "ops[i]: ..."
                return [_ERROR, error_payload("bad_op", str(e))]
            us = self.predictor.predict_parts(parts)
            self.counters["predicted_ops"] += len(us)
            out: dict[str, Any] = {"us": us}
            if isinstance(msg, dict) and "id" in msg:
                out["id"] = msg["id"]
            return [type_frame(t), pack(out)]
        if t is MsgType.HELLO:
            if not isinstance(msg, dict):
                return [_ERROR, error_payload("bad_payload", "HELLO payload must be a map")]
            if msg.get("version") != PROTOCOL_VERSION:
                return [_ERROR, error_payload(
                    "version", f"protocol version {msg.get('version')!r} is not supported; "
                               f"this sidecar speaks {PROTOCOL_VERSION}")]
            want = msg.get("gpu")
            if want not in (None, "", self.gpu):
                return [_ERROR, error_payload(
                    "gpu", f"this sidecar predicts for {self.gpu!r}, not {want!r}")]
            return [type_frame(t), pack({"version": PROTOCOL_VERSION, "gpu": self.gpu,
                                         "descriptor_version": DESCRIPTOR_VERSION,
                                         "model": self.predictor.info()})]
        return [type_frame(t), pack({"server": dict(self.counters),
                                     "predictor": self.predictor.stats.as_dict()})]

    # ---- lifecycle ----

    def request_shutdown(self, *_: Any) -> None:
        """Safe from a signal handler: only sets the flag."""
        self._shutdown.set()

    def shutdown(self) -> None:
        """Stops the loop and closes the socket. Idempotent."""
        self._shutdown.set()
        if self._closed:
            return
        self._closed = True
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(5.0)
        if self._router is not None:  # bound, and the loop never ran
            self._router.close(0)
            self._router = None
        self._ctx.term()


def serve(endpoint: str, gpu: str) -> None:
    """Runs the sidecar in the foreground until SIGINT/SIGTERM (the `revati sidecar` command)."""
    server = SidecarServer(endpoint, gpu)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, server.request_shutdown)
        signal.signal(signal.SIGTERM, server.request_shutdown)
    server.start()
    logger.info("revati sidecar: %s on %s (%s)", gpu, endpoint, server.predictor.info())
    t0 = time.monotonic()
    try:
        server.run_busy_loop()
    finally:
        server.shutdown()
        logger.info("revati sidecar: stopped after %.0f s, %s", time.monotonic() - t0,
                    server.counters)
