"""Where a host's Timekeeper takes what it cannot decide by its own samples: the upstream policy.

The Timekeeper (timekeeper.py) owns a host's actors, its clock page and the quiescence test.
What follows from them depends on whether the host is the whole deployment:

- LocalUpstream (a single host, the default): the Timekeeper is the deployment's clock. When the
  host is quiescent it jumps the page to the earliest deadline and wakes the due actors; it
  freezes its own page; it resolves NCCL collectives in its own table (collectives.py).
- relay.Relay (one host of several): the multi-host Coordinator owns the clock and the
  collectives. When the host is quiescent the relay reports its earliest deadlines, and it
  forwards freezes, collectives and departed processes to the coordinator.

The Timekeeper calls an upstream only from its loop thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from revati.timekeeper.clock_page import ClockPage
from revati.timekeeper.collectives import CollectiveTable, CollectiveWaits, Wait, resolve_keys
from revati.timekeeper.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from revati.timekeeper.actor import Actor
    from revati.timekeeper.timekeeper import Timekeeper


class Upstream(ABC):
    """A Timekeeper's upstream policy (module doc). bind() is called by the Timekeeper it serves."""

    # The collectives resolved on this host, with their waits; None where the upstream resolves them.
    waits: CollectiveWaits | None = None
    tk: "Timekeeper"

    def bind(self, timekeeper: "Timekeeper") -> None:
        self.tk = timekeeper

    @abstractmethod
    def create_page(self) -> ClockPage:
        """The host's clock page, created when the Timekeeper starts."""

    def begin_test(self) -> bool:
        """Before a quiescence test of the host: False skips it."""
        return True

    @abstractmethod
    def quiet(self, firm: int, lazy: int) -> None:
        """The host is quiescent: its earliest firm and lazy deadlines (virtual ns; -1: none).
        Lazy deadlines (idle ticks) are the target only when no firm one is pending."""

    def end_test(self) -> None:
        """After a quiescence test that begin_test allowed."""

    @abstractmethod
    def freeze(self, delta: int) -> None:
        """A FREEZE (+1) or its end (-1) from an actor: the clock stands still while any is held."""

    def joined(self, pid: int) -> None:
        """A process joined (or an exec'ed one joined again)."""

    @abstractmethod
    def left(self, pid: int) -> None:
        """The last connection of process pid closed."""

    @abstractmethod
    def comm(self, a: "Actor", body: list) -> None:
        """COMM [comm, nranks, rank]: a.pid is a rank of an NCCL communicator."""

    @abstractmethod
    def arrive(self, a: "Actor", body: list) -> None:
        """ARRIVE [count, arrival * count] (protocol.py), in order: later arrivals of a batch may
        refer to earlier ones."""

    @abstractmethod
    def resolve(self, a: "Actor", body: list) -> None:
        """RESOLVE [req, wait, (comm, chan, seq) * n]: answered now, or once all are resolved."""


class LocalUpstream(Upstream):
    """The Timekeeper decides alone: its host is the whole deployment."""

    def __init__(self) -> None:
        self.collectives = CollectiveTable()
        self.waits = CollectiveWaits(self.collectives)

    def create_page(self) -> ClockPage:
        tk = self.tk
        return ClockPage.create(tk.page_path, sock_path=tk.sock_path,
                                protocol_version=PROTOCOL_VERSION, dilation=tk.dilation)

    def quiet(self, firm: int, lazy: int) -> None:
        if firm < 0 and lazy < 0:
            return
        # Lazy deadlines (idle ticks, REVATI_TIMEWARP_LAZY) are never the target while a firm
        # one is pending; the jump that passes them wakes them.
        target = firm if firm >= 0 else lazy
        self.tk.count_jump(self.tk.page.jump_to(target))
        self.tk.wake_due(target)

    def freeze(self, delta: int) -> None:
        self.tk.freeze_clock(delta)

    def joined(self, pid: int) -> None:
        self.collectives.dead.discard(pid)

    def left(self, pid: int) -> None:
        self.collectives.dead.add(pid)  # the process left: its ranks will never arrive
        self._check_lost_ranks()

    def comm(self, a: "Actor", body: list) -> None:
        self.collectives.comm(int(body[0]), int(body[1]), int(body[2]), a.pid)

    def arrive(self, a: "Actor", body: list) -> None:
        for w in self.waits.arrive(body, a.pid):
            self._answer(w)

    def resolve(self, a: "Actor", body: list) -> None:
        req, wait = int(body[0]), int(body[1])
        keys = resolve_keys(body, 2)
        w = self.waits.ask(keys, req, a, bool(wait))
        if w is None:
            self.tk.stats.resolve_asks += 1
            self.tk.answer(a, req, self.waits.ends(keys))
            return
        self.tk.stats.resolve_waits += 1
        a.resolving = w
        self._check_lost_ranks()

    def _answer(self, w: Wait) -> None:
        a = w.who
        if a.conn.fileno() < 0:
            return
        w.done = True
        a.resolving = None
        self.tk.answer(a, w.req, self.waits.ends(w.keys))

    def _check_lost_ranks(self) -> None:
        """A thread waits for a collective that lacks a rank whose process has left: it can never
        end. That is a deadlock now; no need to wait for the whole deployment to stall."""
        if self.tk.deadlock:
            return
        lost = self.waits.lost_rank()
        if lost is not None:
            _, _, rank, pid = lost
            self.tk.declare_deadlock(
                headline=f"revati: time warp: deadlock: a collective lacks rank {rank}, whose "
                f"process (pid {pid}) has exited; the threads waiting for it can never go on "
                f"(virtual time {self.tk.now_ns() / 1e9:.6f} s). Waiting:")
