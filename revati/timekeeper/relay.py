"""A host's relay to the multi-host Coordinator (coordinator.py has the protocol's picture).

A Relay is the upstream (upstream.py) of the host's Timekeeper: the Timekeeper keeps its socket,
its clock page and its /proc quiescence test, and the relay takes what follows from them to the
coordinator instead of deciding it. When the host is quiescent it reports QUIET with its
earliest deadlines and does not jump; any change afterwards is reported as BUSY. It forwards
FREEZEs, NCCL collectives (COMM, ARRIVE, RESOLVE) and departed processes (GONE), and applies
what the coordinator sends: PREPARE (confirm with a fresh sample and hold the page), JUMP,
ABORT, FREEZE_ALL, THAW, RESOLVED and DEADLOCK.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import time
from pathlib import Path

from revati.timekeeper import auth
from revati.timekeeper.actor import Actor
from revati.timekeeper.clock_page import ClockPage
from revati.timekeeper.link import Link, global_pid, realtime_offset
from revati.timekeeper.protocol import PROTOCOL_VERSION, MsgType, PayloadError, parse_coordinator_message
from revati.timekeeper.tasks import describe_wait
from revati.timekeeper.timekeeper import Timekeeper, TimekeeperStats
from revati.timekeeper.upstream import Upstream

log = logging.getLogger(__name__)


class Relay(Upstream):
    """A host's Timekeeper that reports to a Coordinator instead of jumping (module doc).

    Args:
        coordinator: (host, port) of `revati coordinator`.
        run_dir: folder for the local socket; the clock page is run_dir/clock unless page_path.
        name: this host's name in the coordinator's messages (default: the hostname).
        connect_timeout_s: how long to keep trying to reach the coordinator.
        quiescence_s: the Timekeeper's quiescence window.
        secret: the deployment's secret (auth.py), which the handshake proves this host knows
            and checks that the coordinator knows too.
    """

    def __init__(self, coordinator: tuple[str, int], *, run_dir: str | os.PathLike, name: str | None = None,
                 page_path: str | os.PathLike | None = None, connect_timeout_s: float = 60.0,
                 quiescence_s: float = 0.002, secret: bytes | None = None):
        self.coordinator = coordinator
        self.secret = secret
        self.name = name or socket.gethostname()
        self.connect_timeout_s = connect_timeout_s
        self.host_id = 0
        self.hold_timeout_s = 1.0
        self._up: Link | None = None
        self._page_start: "tuple[int, int, int] | None" = None  # (virtual ns, its realtime, realtime delta)
        self._seen = 0  # coordinator messages that may wake a thread, handled
        self._reported: "tuple[int, int, int, int] | None" = None  # (gen, seen, firm, lazy) of our QUIET
        self._remote: dict[int, tuple[Actor, int]] = {}  # rid -> (actor, its req)
        self._rid = 0
        self._samples = 0  # the Timekeeper's sample count when its test began
        self._quiet_seen = False
        self._held: "tuple[int, float] | None" = None  # (token, since): our page is held for a jump
        self._coord_frozen = 0  # monotonic ns since the coordinator froze this host's clock (0: not)
        self.timekeeper = Timekeeper(quiescence_s=quiescence_s, deadlock_s=None, run_dir=run_dir,
                                     page_path=page_path or Path(run_dir) / "clock", upstream=self)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> "Relay":
        if not self.secret:
            raise ConnectionError("revati relay: no secret for the coordinator's handshake (--secret-file, "
                                  "the file `revati coordinator` printed, or the deployment's Secret)")
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                sock = socket.create_connection(self.coordinator, timeout=5)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"revati relay: cannot reach the coordinator at "
                                          f"{self.coordinator[0]}:{self.coordinator[1]}: {e}") from None
                time.sleep(0.2)
        self._up = Link(sock)
        welcome = self._handshake(deadline)
        _, self.host_id, now, anchor, rt_delta, boot_delta, dil_ppm = welcome
        self.timekeeper.dilation = dil_ppm / 1e6
        # The page starts at the coordinator's virtual time (create_page, when the Timekeeper starts).
        self._page_start = (int(now), int(anchor), int(rt_delta))
        self.timekeeper.start()
        self.timekeeper.add_link(self._up.sock, self._read_upstream)
        return self

    def _handshake(self, deadline: float) -> list:
        """R_HELLO, R_CHALLENGE, R_AUTH, R_WELCOME (auth.py); returns WELCOME's payload."""
        where = f"{self.coordinator[0]}:{self.coordinator[1]}"
        nonce = auth.new_nonce()
        self._up.send(MsgType.R_HELLO, [PROTOCOL_VERSION, self.name, nonce])
        while time.monotonic() < deadline:
            r, _, _ = select.select([self._up.sock], [], [], 0.5)
            if not r:
                continue
            for t, body in self._up.receive():
                try:
                    parse_coordinator_message(t, body)
                except PayloadError as e:
                    raise ConnectionError(f"revati relay: a bad handshake message from {where}: {e}") from None
                if t == MsgType.R_CHALLENGE:
                    if not auth.check(self.secret, "coordinator", body[1], nonce, body[0]):
                        self._up.close()
                        raise ConnectionError(f"revati relay: the coordinator at {where} did not prove the "
                                              "deployment's secret (a wrong secret here or there)")
                    self._up.send(MsgType.R_AUTH, [auth.proof(self.secret, "relay", body[0], nonce,
                                                              self.name.encode())])
                elif t == MsgType.R_WELCOME:
                    return body
                elif t == MsgType.ERROR:
                    self._up.close()
                    raise ConnectionError(f"revati relay: the coordinator at {where} refused this host: "
                                          f"{body.get('error')}")
            if self._up.closed:
                break
        self._up.close()
        raise ConnectionError(f"revati relay: no WELCOME from the coordinator at {where}")

    def create_page(self) -> ClockPage:
        tk = self.timekeeper
        now, anchor, rt_delta = self._page_start
        page = ClockPage.create(tk.page_path, sock_path=tk.sock_path, protocol_version=PROTOCOL_VERSION,
                                dilation=tk.dilation, start_ns=now, realtime_delta_ns=rt_delta)
        page.anchor(anchor - realtime_offset(), now)  # exactly the coordinator's clock, however late
        return page

    def stop(self) -> None:
        self.timekeeper.stop()
        if self._up:
            self._up.close()

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._up is not None and not self._up.closed

    @property
    def stats(self) -> TimekeeperStats:
        return self.timekeeper.stats

    @property
    def page(self) -> ClockPage | None:
        return self.timekeeper.page

    @property
    def page_path(self) -> Path:
        return self.timekeeper.page_path

    @property
    def deadlock(self) -> str | None:
        return self.timekeeper.deadlock

    def env(self) -> dict[str, str]:
        """The variables that put a process tree on this host's clock."""
        return self.timekeeper.env()

    def now_ns(self) -> int:
        return self.timekeeper.now_ns()

    # -------------------------------------------------------- from the shims

    def freeze(self, delta: int) -> None:
        """A process here took or dropped a FREEZE: the coordinator freezes every host's clock
        (R_FREEZE_ALL) while any holds one, so this host does not freeze alone."""
        if self._up is not None and not self._up.closed:
            self._up.send(MsgType.R_FREEZE, [delta])
        elif delta > 0:
            self.stats.freezes_ignored += 1

    def comm(self, a: Actor, body: list) -> None:
        self._up.send(MsgType.R_COMM, [global_pid(self.host_id, a.pid), int(body[0]), int(body[1]), int(body[2])])

    def arrive(self, a: Actor, body: list) -> None:
        self._up.send(MsgType.R_ARRIVE, [global_pid(self.host_id, a.pid), body])

    def resolve(self, a: Actor, body: list) -> None:
        req, wait = int(body[0]), int(body[1])
        self._rid += 1
        self._remote[self._rid] = (a, req)
        if wait:
            self.stats.resolve_waits += 1
        else:
            self.stats.resolve_asks += 1
        self._up.send(MsgType.R_RESOLVE, [global_pid(self.host_id, a.pid), self._rid, wait] + list(body[2:]))

    def left(self, pid: int) -> None:
        if self._up:
            self._up.send(MsgType.R_GONE, [global_pid(self.host_id, pid)])

    # --------------------------------------------------- from the coordinator

    def _read_upstream(self) -> None:
        tk = self.timekeeper
        for t, body in self._up.receive():
            try:
                parse_coordinator_message(t, body)
            except PayloadError as e:
                log.error("relay: dropped the link to the coordinator: %s", e)
                self._up.closed = True
                break
            if t == MsgType.R_PREPARE:
                ok = self._still_quiet()
                if ok:
                    tk.page.hold()
                    self._held = (int(body[0]), time.monotonic())
                self._up.send(MsgType.R_READY, [int(body[0]), int(ok)])
                if not ok:
                    self._unreport()
            elif t == MsgType.R_JUMP:
                self._seen += 1
                self._move_page(int(body[0]), int(body[2]), int(body[1]))
                tk.wake_due(int(body[1]))
            elif t == MsgType.R_ABORT:
                if self._held is not None and self._held[0] == int(body[0]):
                    tk.page.release()
                    self._held = None
            elif t == MsgType.R_FREEZE_ALL:
                if self._held is not None:  # (the coordinator aborts its round first)
                    tk.page.release()
                    self._held = None
                if not self._coord_frozen:
                    self._coord_frozen = time.monotonic_ns()
                    tk.page.freeze()
                self._up.send(MsgType.R_FROZEN, [int(body[0]), tk.page.now_ns()])
            elif t == MsgType.R_THAW:
                self._seen += 1
                if self._coord_frozen:
                    self.stats.frozen_ns += time.monotonic_ns() - self._coord_frozen
                    self._coord_frozen = 0
                    tk.page.thaw()
                tk.count_jump(tk.page.anchor(int(body[2]) - realtime_offset(), int(body[1])))
                tk.wake_due(int(body[1]))
            elif t == MsgType.R_RESOLVED:
                self._seen += 1
                a, req = self._remote.pop(int(body[0]), (None, 0))
                if a is not None and a.conn.fileno() >= 0:
                    tk.answer(a, req, list(body[1:]))
            elif t == MsgType.R_DEADLOCK:
                self._deadlock_here(str(body[0]))
            elif t == MsgType.ERROR:
                log.error("relay: the coordinator says: %s", body)
        if self._up.error:
            log.error("relay: dropped the link to the coordinator: %s", self._up.error)
        if self._up.closed and not tk.stopped:
            if self._coord_frozen:  # nobody is left to thaw it
                self._coord_frozen = 0
                tk.page.thaw()
            print(f"revati relay: lost the coordinator at {self.coordinator[0]}:{self.coordinator[1]}; "
                  "this host's clock now runs on real time", file=sys.stderr, flush=True)
            tk.remove_link(self._up.sock)

    def _still_quiet(self) -> bool:
        """PREPARE's test: nothing changed since our QUIET, and a fresh sample agrees."""
        tk = self.timekeeper
        if self._reported is None or tk.unread_input() or self._reported[0] != tk.gen:
            return False
        return tk.confirm_quiet()

    def _move_page(self, token: int, anchor_realtime: int, target: int) -> None:
        # The page reads target at the local monotonic instant of the coordinator's anchor.
        page = self.timekeeper.page
        r0 = anchor_realtime - realtime_offset()
        if self._held is not None and self._held[0] == token:
            skip = page.release(r0, target)
        else:  # held too long and released, or a host that joined during the round
            page.release()
            skip = page.anchor(r0, target)
            self.stats.late_jumps += 1
        self._held = None
        self.timekeeper.count_jump(skip)

    def _deadlock_here(self, message: str) -> None:
        lines = [message, f"Threads on host {self.name}:"]
        for a in sorted(self.timekeeper.actors(), key=lambda a: (a.pid, a.tid)):
            lines.append("  " + describe_wait(a.pid, a.tid, a))
        self.timekeeper.end_deadlocked("\n".join(lines))

    # ------------------------------------------------------------ quiescence

    def begin_test(self) -> bool:
        if self._held is not None:
            if time.monotonic() - self._held[1] < self.hold_timeout_s:
                return False
            log.warning("relay: no JUMP or ABORT %.1f s after READY; releasing the clock", self.hold_timeout_s)
            self.timekeeper.page.release()
            self._held = None
            self._unreport()
        if self._up is None or self._up.closed:
            return False
        self._samples, self._quiet_seen = self.stats.samples, False
        return True

    def quiet(self, firm: int, lazy: int) -> None:
        """The host is quiescent: report, do not jump."""
        self._quiet_seen = True
        self._report(firm, lazy)

    def end_test(self) -> None:
        if self.stats.samples != self._samples and not self._quiet_seen:
            self._unreport()  # a sample found work
        if self._reported is not None and self._reported[0] != self.timekeeper.gen:
            self._unreport()

    def _report(self, firm: int, lazy: int) -> None:
        r = (self.timekeeper.gen, self._seen, firm, lazy)
        if r != self._reported:
            self._reported = r
            self._up.send(MsgType.R_QUIET, [self._seen, firm, lazy])

    def _unreport(self) -> None:
        if self._reported is not None:
            self._reported = None
            self._up.send(MsgType.R_BUSY, [])
