"""Multi-host virtual time: one Coordinator per deployment, one Relay per host (pod).

A Timekeeper sees the processes of one host: it reads their threads' states from /proc and
talks to their shims over an AF_UNIX socket named in a shared-memory clock page. Across hosts
neither exists, so the deployment's clock is split in two levels:

- each host runs a **Relay** (relay.py): the upstream of the host's Timekeeper (same socket,
  same clock page, same /proc quiescence test), which does not jump by itself. When its host is
  quiescent it reports QUIET with its earliest deadlines; any change afterwards is reported as
  BUSY. It forwards NCCL collectives (COMM, ARRIVE, RESOLVE) to the coordinator, which resolves
  them across hosts.
- the **Coordinator** (this module; `revati coordinator`, the coordinator pod) owns the
  deployment's clock and the collective table. It jumps only when every relay is quiet, in two
  phases: PREPARE asks every relay to confirm with a fresh /proc sample that nothing ran since
  its report (READY) and holds its clock page (readers wait) until JUMP moves every host's page
  to the same target; each relay then wakes its due actors in (deadline, kind, pid, tid) order.
  A thread woken on a host that moved first cannot make a host that has not moved yet read the
  old time: nothing there can read the clock until it has moved. ABORT releases the pages
  unmoved.

Causality: a host can only be woken by its own deadlines, by a collective's end (RESOLVED, sent
by the coordinator and counted: a QUIET is only believed once the relay has seen every such
message), or by network input from another host, which needs that host to have run: it was not
quiet, or its run shows in the confirming sample of the PREPARE round. A message still in
flight between hosts when both report quiet is the one gap; the confirming round trip makes it
as wide as the network's latency minus a round trip to the coordinator (docs/timewarp.md).

Only the deployment may move its clock: a peer joins as a host once it has proved, by an HMAC
challenge-response, that it knows the deployment's secret (auth.py); before that the coordinator
reads nothing from it but the handshake, in small frames, for at most HANDSHAKE_S. Every message
of a joined host is checked at the door (protocol.parse_relay_message); a malformed one gets
ERROR and its host is dropped, with a log line that names its address (docs/security.md).

Links are TCP (link.py). Every host's page starts at the coordinator's virtual time and
realtime offset, so all hosts read the same virtual clocks; between jumps each runs at the
deployment's dilation from its own real clock (hosts drift by their real clocks' drift, and lag
a jump by its delivery time).
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from revati.timekeeper import auth
from revati.timekeeper.clock_page import ClockPage
from revati.timekeeper.collectives import CollectiveTable, CollectiveWaits, Wait, resolve_keys
from revati.timekeeper.link import HANDSHAKE_FRAME, MAX_FRAME, Link, realtime_offset, split_pid
from revati.timekeeper.protocol import (
    PROTOCOL_VERSION, RELAY_TYPES, MsgType, PayloadError, parse_relay_message)

log = logging.getLogger(__name__)

FREEZE_ACK_S = 5.0  # how long a thaw waits for a host that has not confirmed its freeze
FROZEN_SLACK_NS = 1_000_000_000  # how far ahead of the coordinator's clock a host's frozen time may be
HANDSHAKE_S = 10.0  # how long a peer may take to prove the secret before it is dropped
MAX_PENDING = 64  # peers in their handshake at once; more are closed at accept
_GPID_FIRST = {MsgType.R_GONE, MsgType.R_COMM, MsgType.R_ARRIVE, MsgType.R_RESOLVE}


@dataclass(eq=False)
class _Host:
    link: Link
    host_id: int
    addr: str = "?"  # the peer's address, HOST:PORT, for the log
    name: str = "?"
    joined: bool = False  # proved the secret: a host of the deployment
    since: float = 0.0  # monotonic time of its accept
    nonce: bytes = b""  # the coordinator's challenge (between R_HELLO and R_AUTH)
    peer_nonce: bytes = b""
    sent: int = 0  # messages sent that may wake a thread there (RESOLVED, JUMP)
    quiet: "tuple[int, int, int] | None" = None  # its latest QUIET: (seen, firm, lazy)
    ready: int = -1  # the token of its latest positive READY
    freezes: int = 0  # FREEZEs its processes hold


@dataclass
class CoordinatorStats:
    jumps: int = 0
    jumped_ns: int = 0
    prepares: int = 0
    aborted: int = 0  # PREPARE rounds a host answered busy, or that timed out
    hosts_seen: int = 0
    refused: int = 0  # peers dropped for a failed handshake (wrong secret, timeout) or a bad message
    arrivals: int = 0
    resolves: int = 0
    freezes: int = 0  # times every host's clock was frozen (a Triton JIT somewhere, say)
    frozen_ns: int = 0  # real ns it stood still


class Coordinator:
    """The deployment's clock across hosts (see the module doc). start()/stop() or a context
    manager; `revati coordinator` runs one until SIGTERM.

    Args:
        secret: the deployment's secret, which relays prove they know (auth.py); None: a new
            one, `secret` then holds it for the relays.
    """

    def __init__(self, listen: tuple[str, int] = ("0.0.0.0", 7070), *, dilation: float = 1.0,
                 deadlock_s: float | None = 30.0, prepare_timeout_s: float = 2.0,
                 page_path: str | os.PathLike | None = None, secret: bytes | None = None,
                 handshake_s: float = HANDSHAKE_S):
        self.listen = listen
        self.secret = secret if secret is not None else auth.new_secret()
        self.handshake_s = handshake_s
        self.dilation = dilation
        self.deadlock_s = deadlock_s
        self.prepare_timeout_s = prepare_timeout_s
        self.page_path = Path(page_path) if page_path else Path("/dev/shm") / f"revati-coord-{os.getpid()}-{id(self):x}"
        self.page: ClockPage | None = None
        self.stats = CoordinatorStats()
        self.collectives = CollectiveTable()
        self.waits = CollectiveWaits(self.collectives)  # RESOLVE requests: Wait.who is the host
        self.deadlock: str | None = None
        self.address: tuple[str, int] | None = None
        self._hosts: dict[int, _Host] = {}  # joined hosts, by fd
        self._pending: dict[int, _Host] = {}  # peers in their handshake, by fd
        self._next_check = 0.0
        self._next_host = 1
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = 0
        self._prepare: "tuple[int, int, float] | None" = None  # (token, target, started)
        self._stall_since: float | None = None
        # a freeze of every host: {"token", "acks": {host fd: its frozen virtual time}, "t0"}
        self._frozen: dict | None = None

    def start(self) -> "Coordinator":
        self._listener = socket.create_server(self.listen, backlog=64, reuse_port=False)
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()[:2]
        self.page = ClockPage.create(self.page_path, sock_path="", protocol_version=PROTOCOL_VERSION,
                                     dilation=self.dilation)
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="revati-coordinator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for h in [*self._hosts.values(), *self._pending.values()]:
            h.link.close()
        if self._listener:
            self._listener.close()
        if self.page:
            self.page.close()

    def __enter__(self) -> "Coordinator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def now_ns(self) -> int:
        assert self.page is not None
        return self.page.now_ns()

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self._hosts.values()]

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.001):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            try:
                if self._pending and time.monotonic() >= self._next_check:
                    self._expire_handshakes()
                self._decide()
                if self._frozen is not None and self._frozen.get("thaw_since"):
                    self._sync_freeze()  # a thaw waiting for a host's R_FROZEN: time it out
            except Exception:  # never let one bad decision stop the clock
                log.exception("coordinator: decision failed")

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of fds, say: the peer waits in the backlog
                log.warning("coordinator: accept failed: %s", e)
                return
            addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            if len(self._pending) >= MAX_PENDING:
                log.warning("coordinator: refused %s: %d peers are already in their handshake", addr, MAX_PENDING)
                self.stats.refused += 1
                conn.close()
                continue
            h = _Host(Link(conn, max_frame=HANDSHAKE_FRAME), self._next_host, addr=addr, since=time.monotonic())
            self._next_host += 1
            self._pending[conn.fileno()] = h
            self._sel.register(conn, selectors.EVENT_READ, h)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        self._next_check = now + 0.1
        for h in list(self._pending.values()):
            if now - h.since > self.handshake_s:
                self._refuse(h, "timeout", f"no handshake in {self.handshake_s:g} s")

    def _refuse(self, h: _Host, code: str, why: str) -> None:
        """ERROR to the peer, which is dropped, with a warning that names its address."""
        self.stats.refused += 1
        what = f"host {h.name} ({h.host_id})" if h.joined else "a peer"
        log.warning("coordinator: dropped %s at %s: %s", what, h.addr, why)
        h.link.send(MsgType.ERROR, {"error": why, "code": code})
        h.link.closed = True
        self._drop(h)

    def _drop(self, h: _Host) -> None:
        try:
            self._sel.unregister(h.link.sock)
        except (KeyError, ValueError):
            pass
        fd = h.link.fileno()
        self._pending.pop(fd, None)
        h.link.close()
        if not h.joined:
            if not h.link.error and h.link.closed:  # (_refuse has logged the others)
                log.info("coordinator: a peer at %s left during its handshake", h.addr)
            return
        if self._hosts.pop(fd, None) is None:
            return
        log.info("coordinator: host %s (%d) at %s left", h.name, h.host_id, h.addr)
        for w in self.waits.pending():  # nobody is left to answer: they cannot hold anyone up
            if w.who is h:
                w.done = True
        for pid in {p for m in self.collectives.members.values() for p in m.values()}:
            if split_pid(pid)[0] == h.host_id:
                self.collectives.dead.add(pid)
        self._check_lost_ranks()
        self._sync_freeze()  # its freezes end with it, and it owes no R_FROZEN

    def _read(self, h: _Host) -> None:
        try:
            for t, body in h.link.receive():
                if h.joined:
                    self._handle(h, t, body)
                else:
                    self._handshake(h, t, body)
                if h.link.fileno() < 0:
                    return  # dropped by this message
            if h.link.error is not None:
                self._refuse(h, "bad_frame", h.link.error)
            elif h.link.closed:
                self._drop(h)
        except Exception as e:  # a bug, never a reason to stop the clock: the peer goes
            log.exception("coordinator: a message from %s failed", h.addr)
            if h.link.sock.fileno() >= 0:
                self._refuse(h, "internal", f"internal error: {type(e).__name__}")

    def _handshake(self, h: _Host, t: int, body) -> None:
        """R_HELLO, then R_AUTH (module doc); anything else, or a wrong proof, drops the peer."""
        expect = MsgType.R_AUTH if h.nonce else MsgType.R_HELLO
        if t != expect:
            name = MsgType(t).name if t in MsgType._value2member_map_ else str(t)
            self._refuse(h, "bad_order", f"{expect.name} expected before anything else, got {name}")
            return
        if t == MsgType.R_HELLO and type(body) is list and body and body[0] != PROTOCOL_VERSION:
            self._refuse(h, "version", f"protocol version {PROTOCOL_VERSION} expected, got {body[0]!r:.40}")
            return
        try:
            parse_relay_message(t, body)
        except PayloadError as e:
            self._refuse(h, "bad_payload", str(e))
            return
        if t == MsgType.R_HELLO:
            h.name, h.peer_nonce, h.nonce = body[1], body[2], auth.new_nonce()
            h.link.send(MsgType.R_CHALLENGE, [h.nonce, auth.proof(self.secret, "coordinator", h.peer_nonce, h.nonce)])
            return
        if not auth.check(self.secret, "relay", body[0], h.nonce, h.peer_nonce, h.name.encode()):
            self._refuse(h, "auth", f"host {h.name!r} did not prove the deployment's secret")
            return
        fd = h.link.fileno()
        self._pending.pop(fd, None)
        h.joined, h.nonce = True, b""
        h.link.max_frame = MAX_FRAME
        self._hosts[fd] = h
        self._welcome(h)

    def _handle(self, h: _Host, t: int, body) -> None:
        try:
            parse_relay_message(t, body)
        except PayloadError as e:
            self._refuse(h, "bad_payload" if t in RELAY_TYPES else "bad_type", str(e))
            return
        if t in (MsgType.R_HELLO, MsgType.R_AUTH):
            self._refuse(h, "bad_order", f"{MsgType(t).name} from a host that has joined")
            return
        if t in _GPID_FIRST and split_pid(body[0])[0] != h.host_id:
            self._refuse(h, "bad_payload", f"{MsgType(t).name}: gpid {body[0]} is not of host {h.host_id}")
            return
        self._apply(h, t, body)

    def _welcome(self, h: _Host) -> None:
        self.stats.hosts_seen += 1
        snap_now = self.page.now_ns()
        h.link.send(MsgType.R_WELCOME, [PROTOCOL_VERSION, h.host_id, snap_now, self._realtime_of(snap_now),
                                        self.page.get("realtime_delta_ns"), self.page.get("boottime_delta_ns"),
                                        int(round(self.dilation * 1e6))])
        log.info("coordinator: host %s at %s joined as %d", h.name, h.addr, h.host_id)
        if self._frozen is not None:  # joins a frozen deployment: freezes too
            h.link.send(MsgType.R_FREEZE_ALL, [self._frozen["token"]])

    def _apply(self, h: _Host, t: int, body: list) -> None:
        """A joined host's message, checked (_handle)."""
        if t == MsgType.R_QUIET:
            h.quiet = (int(body[0]), int(body[1]), int(body[2]))
        elif t == MsgType.R_BUSY:
            h.quiet = None
        elif t == MsgType.R_READY:
            if int(body[1]):
                h.ready = int(body[0])
            elif self._prepare and int(body[0]) == self._prepare[0]:
                self._abort()
        elif t in (MsgType.R_COMM, MsgType.R_ARRIVE, MsgType.R_RESOLVE):
            # A process that exec'ed (ip netns exec, sh, env ...) left and came back under its pid.
            self.collectives.dead.discard(int(body[0]))
            if t == MsgType.R_COMM:
                self.collectives.comm(int(body[1]), int(body[2]), int(body[3]), int(body[0]))
            elif t == MsgType.R_ARRIVE:
                self._arrive(int(body[0]), body[1])
            else:
                self._resolve(h, body)
        elif t == MsgType.R_GONE:
            self.collectives.dead.add(int(body[0]))
            self._check_lost_ranks()
        elif t == MsgType.R_FREEZE:
            h.freezes = max(0, h.freezes + (1 if int(body[0]) > 0 else -1))
            self._sync_freeze()
        elif t == MsgType.R_FROZEN:
            if self._frozen is not None and int(body[0]) == self._frozen["token"]:
                self._frozen["acks"][h.link.fileno()] = int(body[1])
                self._sync_freeze()

    # ----------------------------------------------------------- collectives

    def _arrive(self, gpid: int, body: list) -> None:
        before = self.collectives.arrivals
        done = self.waits.arrive(body, gpid)
        self.stats.arrivals += self.collectives.arrivals - before
        for w in done:
            self._answer(w)

    def _resolve(self, h: _Host, body: list) -> None:
        """R_RESOLVE [gpid, rid, wait, (comm, chan, seq) * n]."""
        rid, wait = int(body[1]), int(body[2])
        keys = resolve_keys(body, 3)
        self.stats.resolves += 1
        w = self.waits.ask(keys, rid, h, bool(wait))
        if w is None:
            self._reply(h, rid, keys)
            return
        self._check_lost_ranks()

    def _answer(self, w: Wait) -> None:
        if w.done or w.who.link.fileno() < 0:  # (a peer that has only closed its side still reads)
            return
        w.done = True
        self._reply(w.who, w.req, w.keys)

    def _reply(self, h: _Host, rid: int, keys: list) -> None:
        if h.link.fileno() < 0:
            return
        h.sent += 1
        h.link.send(MsgType.R_RESOLVED, [rid] + self.waits.ends(keys))

    def _check_lost_ranks(self) -> None:
        if self.deadlock:
            return
        lost = self.waits.lost_rank()
        if lost is not None:
            _, key, rank, gpid = lost
            host, pid = split_pid(gpid)
            self._declare_deadlock(
                f"revati: time warp: deadlock: a collective lacks rank {rank}, whose process "
                f"(pid {pid} on host {host}) has exited; the threads waiting for it can never go on "
                f"(virtual time {self.now_ns() / 1e9:.6f} s).\n  " + self.collectives.describe(key))

    # ------------------------------------------------------------ the clock

    def _decide(self) -> None:
        if self.deadlock or not self._hosts:
            if self._prepare is not None:
                self._abort()
            return
        hosts = list(self._hosts.values())
        valid = all(h.quiet is not None and h.quiet[0] == h.sent for h in hosts)
        if self._prepare is not None:
            token, target, t0 = self._prepare
            if not valid or time.monotonic() - t0 > self.prepare_timeout_s:
                self._abort()
            elif all(h.ready == token for h in hosts):
                self._prepare = None
                self._commit(token, target)
            return
        if not valid:
            self._stall_since = None
            return
        firm = [h.quiet[1] for h in hosts if h.quiet[1] >= 0]
        lazy = [h.quiet[2] for h in hosts if h.quiet[2] >= 0]
        if not firm and not lazy:
            now = time.monotonic()
            self._stall_since = self._stall_since or now
            if self.deadlock_s is not None and now - self._stall_since >= self.deadlock_s:
                self._declare_deadlock(
                    f"revati: time warp: deadlock: every thread on the {len(hosts)} host(s) "
                    f"({', '.join(h.name for h in hosts)}) has been blocked for {now - self._stall_since:.1f} s "
                    f"of wall time with no virtual deadline to jump to (virtual time {self.now_ns() / 1e9:.6f} s).")
            return
        self._stall_since = None
        target = min(firm) if firm else min(lazy)
        self._token += 1
        self._prepare = (self._token, target, time.monotonic())
        self.stats.prepares += 1
        for h in hosts:
            h.link.send(MsgType.R_PREPARE, [self._token])

    # ---------------------------------------------------------------- freezes

    def _sync_freeze(self) -> None:
        """Freezes every host's clock while any host's processes hold a FREEZE (Triton JIT on
        first use, see Timekeeper._freeze), and restarts them together: each host freezes where
        its clock stands (they differ by a message's delivery time) and reports that time; the
        thaw places every host at the latest of them, at one real instant, as a JUMP does."""
        want = any(h.freezes for h in self._hosts.values())
        if want and self._frozen is None:
            if self._prepare is not None:
                self._abort()  # a held page cannot freeze; ABORT reaches each relay first
            self._token += 1
            self._frozen = {"token": self._token, "acks": {}, "t0": time.monotonic_ns()}
            self.page.freeze()
            self.stats.freezes += 1
            for h in self._hosts.values():
                h.link.send(MsgType.R_FREEZE_ALL, [self._token])
        elif not want and self._frozen is not None:
            acks = self._frozen["acks"]
            missing = [h.name for h in self._hosts.values() if h.link.fileno() not in acks]
            if missing:  # a host has not frozen yet: thaw once it has, or after FREEZE_ACK_S
                since = self._frozen.setdefault("thaw_since", time.monotonic())
                if time.monotonic() - since < FREEZE_ACK_S:
                    return
                log.warning("coordinator: no R_FROZEN from %s in %.0f s; thawing without it",
                            ", ".join(missing), FREEZE_ACK_S)
            now = self.page.now_ns()
            live = {h.link.fileno() for h in self._hosts.values()}
            v = max([now, *(a for fd, a in acks.items() if fd in live and a <= now + FROZEN_SLACK_NS)])
            for fd, a in acks.items():
                if fd in live and a > now + FROZEN_SLACK_NS:  # a host's page cannot be that far ahead
                    log.warning("coordinator: ignored an R_FROZEN at %d ns, %.3f s ahead of the clock",
                                a, (a - now) / 1e9)
            self.page.thaw()
            self.page.jump_to(v)
            anchor = self._realtime_of(v)
            token = self._frozen["token"]
            self.stats.frozen_ns += time.monotonic_ns() - self._frozen["t0"]
            self._frozen = None
            for h in self._hosts.values():
                h.sent += 1  # it may wake threads there, as a JUMP does
                h.quiet = None
                h.link.send(MsgType.R_THAW, [token, v, anchor])

    def _commit(self, token: int, target: int) -> None:
        """Every host holds its page since its READY; JUMP moves and releases it, then wakes the
        host's due threads. A thread woken on a host that moved first and reaching one that has
        not yet can read no time there until it has moved (ClockPage.hold)."""
        target = max(target, self.page.now_ns())  # a deadline the clock has passed: no jump back
        skip = self.page.jump_to(target)
        if skip:
            self.stats.jumps += 1
            self.stats.jumped_ns += skip
        anchor = self._realtime_of(target)
        for h in self._hosts.values():
            h.sent += 1
            h.quiet = None
            h.link.send(MsgType.R_JUMP, [token, target, anchor])

    def _abort(self) -> None:
        token = self._prepare[0]
        self._prepare = None
        self.stats.aborted += 1
        for h in self._hosts.values():
            h.link.send(MsgType.R_ABORT, [token])

    def _realtime_of(self, v: int) -> int:
        """The real CLOCK_REALTIME (ns) at which this page read (or reads) virtual v: hosts place
        a jump by it, so their pages agree to within their real clocks' offset, whatever the
        delivery time of the jump."""
        s = self.page.snapshot()
        mono = s.r0_ns + (v - s.offset_ns) * s.dilation_ppm // 1_000_000
        return mono + realtime_offset()

    def _declare_deadlock(self, message: str) -> None:
        self.deadlock = message
        print(message, file=sys.stderr, flush=True)
        for h in self._hosts.values():
            h.link.send(MsgType.R_DEADLOCK, [message])
