"""revati.sidecar: the per-pod prediction service (ZeroMQ ROUTER + msgpack).

See protocol.py for the wire format, server.py for the service and client.py for a client.
"""

from revati.sidecar.client import SidecarClient, SidecarError
from revati.sidecar.protocol import PROTOCOL_VERSION, MsgType
from revati.sidecar.server import SidecarServer, serve

__all__ = ["PROTOCOL_VERSION", "MsgType", "SidecarClient", "SidecarError", "SidecarServer",
           "serve"]
