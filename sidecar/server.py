"""The sidecar prediction service, shaped like vLLM's engine core.

Threads:
  revati-sidecar-io   owns the ROUTER socket: receives client frames onto the input queue,
                      and sends the replies the busy loop hands back over an inproc PAIR
                      socket (ZeroMQ sockets must stay in one thread).
  main (busy loop)    `run_busy_loop`: takes a request, decodes it, predicts, encodes the reply.
Signal handlers only set the shutdown flag; the loop sees it within POLL_S. `shutdown()` is
idempotent. A malformed message (wrong frame count, bad msgpack, unknown type, bad op fields)
gets an ERROR reply and never stops the service.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import uuid
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
        self._inq: queue.Queue[list[bytes]] = queue.Queue()
        self._reply_addr = f"inproc://revati-sidecar-replies-{uuid.uuid4().hex}"
        self._reply_push = self._ctx.socket(zmq.PAIR)
        self._reply_push.bind(self._reply_addr)
        self._shutdown = threading.Event()
        self._bound = threading.Event()
        self._io_error: BaseException | None = None
        self._io = threading.Thread(target=self._io_loop, name="revati-sidecar-io", daemon=True)
        self._loop_thread: threading.Thread | None = None
        self.counters = {"messages": 0, "errors": 0, "predicted_ops": 0}
        self._closed = False

    # ---- I/O thread ----

    def _io_loop(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        replies = self._ctx.socket(zmq.PAIR)
        try:
            router.bind(self.endpoint)
            if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
                os.chmod(self.endpoint[len("ipc://"):], 0o600)  # owner-only (docs/security.md)
            replies.connect(self._reply_addr)
        except zmq.ZMQError as e:
            self._io_error = e
            self._bound.set()
            router.close(0)
            replies.close(0)
            return
        self._bound.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        try:
            while not self._shutdown.is_set():
                for sock, _ in poller.poll(int(POLL_S * 1000)):
                    if sock is router:
                        self._inq.put(router.recv_multipart(copy=True))
                    else:
                        router.send_multipart(replies.recv_multipart(copy=True))
        finally:
            router.close(0)
            replies.close(0)

    # ---- busy loop ----

    def start(self) -> None:
        """Starts the I/O thread and waits until the endpoint is bound."""
        self._io.start()
        self._bound.wait(10.0)
        if self._io_error is not None:
            raise RuntimeError(f"sidecar cannot bind {self.endpoint}: {self._io_error}")

    def start_in_thread(self) -> "SidecarServer":
        """Starts I/O and the busy loop in background threads (tests, embedding)."""
        self.start()
        self._loop_thread = threading.Thread(target=self.run_busy_loop,
                                             name="revati-sidecar-loop", daemon=True)
        self._loop_thread.start()
        return self

    def run_busy_loop(self) -> None:
        """Takes requests until shutdown; each one gets exactly one reply."""
        while not self._shutdown.is_set():
            try:
                frames = self._inq.get(timeout=POLL_S)
            except queue.Empty:
                continue
            self._reply_push.send_multipart(self.handle(frames))

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
        """Stops both threads and closes the sockets. Idempotent."""
        self._shutdown.set()
        if self._closed:
            return
        self._closed = True
        if self._io.is_alive():
            self._io.join(5.0)
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(5.0)
        self._reply_push.close(0)
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
