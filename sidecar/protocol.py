"""Wire protocol between the shim (or any DEALER client) and the sidecar.

A message is two frames: a one-byte type, then a msgpack payload. The ROUTER socket prefixes
the client's identity (and keeps an empty delimiter frame if a REQ client sent one). Replies
carry the request's type, or ERROR.

  HELLO   0x01  {"version": int, "gpu": str | None}
                -> {"version", "gpu", "model": {...}, "descriptor_version"}
  PREDICT 0x02  {"ops": [descriptor, ...], "id": any?}  (a bare list of descriptors also works)
                -> {"us": [float, ...], "id": any?}
  STATS   0x03  {} -> predictor and server counters
  ERROR   0x7F  reply only: {"error": str, "code": str}

Error codes: bad_frames, bad_type, bad_msgpack, bad_payload, bad_op, version, gpu, internal.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

PROTOCOL_VERSION = 1


class MsgType(enum.IntEnum):
    HELLO = 0x01
    PREDICT = 0x02
    STATS = 0x03
    ERROR = 0x7F


def type_frame(t: MsgType) -> bytes:
    return bytes((int(t),))


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    # NOTE: strict_map_key=False lets clients send int keys; raw=False gives str for str.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def error_payload(code: str, message: str) -> bytes:
    return pack({"error": message, "code": code})
