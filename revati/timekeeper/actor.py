"""An actor: one thread of an emulated process, as its shim announces it to the Timekeeper."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from revati.timekeeper.collectives import Wait

RUNNING, WAITING = "running", "waiting"
LAZY = 0x100  # flag on a WAIT's kind: an idle tick that may be coalesced (shim/src/timewarp.h)


@dataclass(eq=False)
class Actor:
    conn: socket.socket
    pid: int = 0
    tid: int = 0
    state: str = RUNNING
    seq: int = 0
    deadline: int = 0
    kind: int = 0
    lazy: bool = False
    greeted: bool = False
    frozen: int = 0  # FREEZE depth this actor holds
    held: int = 0  # of which holds (FREEZE [delta, 1]): no jump either while any is held
    resolving: "Wait | None" = None  # a RESOLVE with wait=1 not answered yet
