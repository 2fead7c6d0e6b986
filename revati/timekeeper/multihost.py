"""Multi-host virtual time: one Coordinator per deployment, one Relay per host (pod).

A Timekeeper sees the processes of one host: it reads their threads' states from /proc and
talks to their shims over an AF_UNIX socket named in a shared-memory clock page. Across hosts
neither exists, so the deployment's clock is split in two levels:

- each host runs a **Relay**: a Timekeeper for the host's processes (same socket, same clock
  page, same /proc quiescence test) that does not jump by itself. When its host is quiescent it
  reports QUIET with its earliest deadlines; any change afterwards is reported as BUSY. It
  forwards NCCL collectives (COMM, ARRIVE, RESOLVE) to the coordinator, which resolves them
  across hosts.
- the **Coordinator** (`revati coordinator`, the coordinator pod) owns the deployment's clock
  and the collective table. It jumps only when every relay is quiet, in two phases: PREPARE
  asks every relay to confirm with a fresh /proc sample that nothing ran since its report
  (READY) and holds its clock page (readers wait) until JUMP moves every host's page to the same
  target; each relay then wakes its due actors in (deadline, kind, pid, tid) order. A thread
  woken on a host that moved first cannot make a host that has not moved yet read the old time:
  nothing there can read the clock until it has moved. ABORT releases the pages unmoved.

Causality: a host can only be woken by its own deadlines, by a collective's end (RESOLVED, sent
by the coordinator and counted: a QUIET is only believed once the relay has seen every such
message), or by network input from another host, which needs that host to have run: it was not
quiet, or its run shows in the confirming sample of the PREPARE round. A message still in
flight between hosts when both report quiet is the one gap; the confirming round trip makes it
as wide as the network's latency minus a round trip to the coordinator (docs/timewarp.md).

Links are TCP: frames of a 4-byte big-endian length and a protocol.encode()d message. Every
host's page starts at the coordinator's virtual time and realtime offset, so all hosts read the
same virtual clocks; between jumps each runs at the deployment's dilation from its own real
clock (hosts drift by their real clocks' drift, and lag a jump by its delivery time).
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from revati.timekeeper.clock_page import ClockPage
from revati.timekeeper.collectives import CollectiveTable, Key, arrivals
from revati.timekeeper.protocol import PROTOCOL_VERSION, MsgType, decode, encode
from revati.timekeeper.timekeeper import LAZY, RUNNING, WAITING, Actor, Timekeeper, _c_scanner, describe_wait

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">I")
_MAX_FRAME = 64 << 20
FREEZE_ACK_S = 5.0  # how long a thaw waits for a host that has not confirmed its freeze
PID_BITS = 22  # Linux pid_max is at most 2^22: a host's pid fits below its host id


def global_pid(host_id: int, pid: int) -> int:
    """A pid unique across hosts (pids repeat between pods)."""
    return (host_id << PID_BITS) | pid


def split_pid(gpid: int) -> tuple[int, int]:
    return gpid >> PID_BITS, gpid & ((1 << PID_BITS) - 1)


def realtime_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC (ns), from the tightest of a few paired reads (a read
    preempted between its two clocks would misplace every jump by the preemption)."""
    best = None
    for _ in range(5):
        m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, rt - (m0 + m1) // 2)
    return best[1]


def parse_address(text: str, default_port: int = 7070) -> tuple[str, int]:
    """HOST:PORT (or HOST) -> (host, port); raises ValueError with what was wrong."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not host:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 < p < 65536:
        raise ValueError(f"{text!r}: the port must be in 1..65535")
    return host.strip("[]"), p


class Link:
    """One TCP connection carrying length-prefixed protocol messages. Sends block (messages are
    small); receives are non-blocking and return every complete frame read so far."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, t: MsgType, payload) -> None:
        body = encode(t, payload)
        try:
            self.sock.sendall(_FRAME.pack(len(body)) + body)
        except OSError:
            self.closed = True

    def receive(self) -> list[tuple[int, object]]:
        """Frames available now; sets closed on EOF or on an error."""
        while True:
            try:
                chunk = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._buf += chunk
        out = []
        while len(self._buf) >= 4:
            (n,) = _FRAME.unpack_from(self._buf)
            if n > _MAX_FRAME:
                self.closed = True
                break
            if len(self._buf) < 4 + n:
                break
            frame = bytes(self._buf[4:4 + n])
            del self._buf[:4 + n]
            try:
                out.append(decode(frame))
            except ValueError as e:
                log.warning("multihost: dropped a bad frame: %s", e)
        return out

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------- coordinator


@dataclass(eq=False)
class _Host:
    link: Link
    host_id: int
    name: str = "?"
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
    arrivals: int = 0
    resolves: int = 0
    freezes: int = 0  # times every host's clock was frozen (a Triton JIT somewhere, say)
    frozen_ns: int = 0  # real ns it stood still


@dataclass(eq=False)
class _Waiter:
    host: _Host
    rid: int
    keys: list = field(default_factory=list)
    done: bool = False


class Coordinator:
    """The deployment's clock across hosts (see the module doc). start()/stop() or a context
    manager; `revati coordinator` runs one until SIGTERM."""

    def __init__(self, listen: tuple[str, int] = ("0.0.0.0", 7070), *, dilation: float = 1.0,
                 deadlock_s: float | None = 30.0, prepare_timeout_s: float = 2.0,
                 page_path: str | os.PathLike | None = None):
        self.listen = listen
        self.dilation = dilation
        self.deadlock_s = deadlock_s
        self.prepare_timeout_s = prepare_timeout_s
        self.page_path = Path(page_path) if page_path else Path("/dev/shm") / f"revati-coord-{os.getpid()}-{id(self):x}"
        self.page: ClockPage | None = None
        self.stats = CoordinatorStats()
        self.collectives = CollectiveTable()
        self.deadlock: str | None = None
        self.address: tuple[str, int] | None = None
        self._hosts: dict[int, _Host] = {}  # by fd
        self._next_host = 1
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = 0
        self._prepare: "tuple[int, int, float] | None" = None  # (token, target, started)
        self._stall_since: float | None = None
        self._waiters: dict[Key, list[_Waiter]] = {}
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
        for h in list(self._hosts.values()):
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
                self._decide()
                if self._frozen is not None and self._frozen.get("thaw_since"):
                    self._sync_freeze()  # a thaw waiting for a host's R_FROZEN: time it out
            except Exception:  # never let one bad decision stop the clock
                log.exception("coordinator: decision failed")

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            h = _Host(Link(conn), self._next_host)
            self._next_host += 1
            self._hosts[conn.fileno()] = h
            self._sel.register(conn, selectors.EVENT_READ, h)

    def _drop(self, h: _Host) -> None:
        try:
            self._sel.unregister(h.link.sock)
        except (KeyError, ValueError):
            pass
        self._hosts.pop(h.link.fileno(), None)
        h.link.close()
        log.info("coordinator: host %s (%d) left", h.name, h.host_id)
        for pid in {p for m in self.collectives.members.values() for p in m.values()}:
            if split_pid(pid)[0] == h.host_id:
                self.collectives.dead.add(pid)
        self._check_lost_ranks()
        self._sync_freeze()  # its freezes end with it, and it owes no R_FROZEN

    def _read(self, h: _Host) -> None:
        for t, body in h.link.receive():
            self._handle(h, t, body)
        if h.link.closed:
            self._drop(h)

    def _handle(self, h: _Host, t: int, body) -> None:
        if t == MsgType.R_HELLO:
            if not isinstance(body, list) or len(body) < 2 or body[0] != PROTOCOL_VERSION:
                h.link.send(MsgType.ERROR, {"error": f"protocol version {PROTOCOL_VERSION} expected, got {body!r}",
                                            "code": "version"})
                h.link.closed = True
                return
            h.name = str(body[1])
            self.stats.hosts_seen += 1
            snap_now = self.page.now_ns()
            h.link.send(MsgType.R_WELCOME, [PROTOCOL_VERSION, h.host_id, snap_now, self._realtime_of(snap_now),
                                            self.page.get("realtime_delta_ns"), self.page.get("boottime_delta_ns"),
                                            int(round(self.dilation * 1e6))])
            log.info("coordinator: host %s joined as %d", h.name, h.host_id)
            if self._frozen is not None:  # joins a frozen deployment: freezes too
                h.link.send(MsgType.R_FREEZE_ALL, [self._frozen["token"]])
        elif t == MsgType.R_QUIET:
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
        else:
            h.link.send(MsgType.ERROR, {"error": f"unexpected message type {t}", "code": "bad_type"})

    # ----------------------------------------------------------- collectives

    def _arrive(self, gpid: int, body: list) -> None:
        done = []
        for arrival in arrivals(body):
            done += self.collectives.arrive(*arrival, gpid)
            self.stats.arrivals += 1
        for key in done:
            for w in self._waiters.pop(key, ()):
                self._answer(w)

    def _resolve(self, h: _Host, body: list) -> None:
        """R_RESOLVE [gpid, rid, wait, (comm, chan, seq) * n]."""
        rid, wait = int(body[1]), int(body[2])
        keys = [(body[k], body[k + 1], body[k + 2]) for k in range(3, len(body) - 2, 3)]
        w = _Waiter(h, rid, keys)
        self.stats.resolves += 1
        if not wait or all(self.collectives.end(k) is not None for k in keys):
            self._answer(w, force=True)
            return
        for k in keys:
            if self.collectives.end(k) is None:
                self._waiters.setdefault(k, []).append(w)
        self._check_lost_ranks()

    def _answer(self, w: _Waiter, force: bool = False) -> None:
        if w.done or w.host.link.closed:
            return
        ends = [self.collectives.end(k) for k in w.keys]
        if force or all(e is not None for e in ends):
            w.done = True
            w.host.sent += 1
            w.host.link.send(MsgType.R_RESOLVED, [w.rid] + [-1 if e is None else e for e in ends])

    def _check_lost_ranks(self) -> None:
        if self.deadlock or not self.collectives.dead:
            return
        for ws in self._waiters.values():
            for w in ws:
                if w.done:
                    continue
                for k in w.keys:
                    for b in self.collectives.blockers(k, set()):
                        lost = self.collectives.lost_rank(b)
                        if lost is not None:
                            host, pid = split_pid(lost[1])
                            self._declare_deadlock(
                                f"revati: time warp: deadlock: a collective lacks rank {lost[0]}, whose process "
                                f"(pid {pid} on host {host}) has exited; the threads waiting for it can never go on "
                                f"(virtual time {self.now_ns() / 1e9:.6f} s).\n  " + self.collectives.describe(b))
                            return

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
            v = max([self.page.now_ns(), *acks.values()])
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


# --------------------------------------------------------------------------------- relay


class Relay(Timekeeper):
    """A host's Timekeeper that reports to a Coordinator instead of jumping (module doc).

    Args:
        coordinator: (host, port) of `revati coordinator`.
        run_dir: folder for the local socket; the clock page is run_dir/clock unless page_path.
        name: this host's name in the coordinator's messages (default: the hostname).
        connect_timeout_s: how long to keep trying to reach the coordinator.
    """

    def __init__(self, coordinator: tuple[str, int], *, run_dir: str | os.PathLike, name: str | None = None,
                 page_path: str | os.PathLike | None = None, connect_timeout_s: float = 60.0,
                 quiescence_s: float = 0.002):
        super().__init__(quiescence_s=quiescence_s, deadlock_s=None, run_dir=run_dir,
                         page_path=page_path or Path(run_dir) / "clock")
        self.coordinator = coordinator
        self.name = name or socket.gethostname()
        self.connect_timeout_s = connect_timeout_s
        self.host_id = 0
        self._up: Link | None = None
        self._seen = 0  # coordinator messages that may wake a thread, handled
        self._reported: "tuple[int, int, int, int] | None" = None  # (gen, seen, firm, lazy) of our QUIET
        self._remote: dict[int, tuple[Actor, int]] = {}  # rid -> (actor, its req)
        self._rid = 0
        self._quiet_seen = False
        self._held: "tuple[int, float] | None" = None  # (token, since): our page is held for a jump
        self._coord_frozen = 0  # monotonic ns since the coordinator froze this host's clock (0: not)
        self.hold_timeout_s = 1.0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> "Relay":
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
        self._up.send(MsgType.R_HELLO, [PROTOCOL_VERSION, self.name])
        welcome = self._await_welcome(deadline)
        _, self.host_id, now, anchor, rt_delta, boot_delta, dil_ppm = welcome
        self.dilation = dil_ppm / 1e6
        # The page starts at the coordinator's virtual time (Timekeeper.start creates it).
        self._page_start = (int(now), int(anchor), int(rt_delta))
        super().start()
        self._sel.register(self._up.sock, selectors.EVENT_READ, self._read_upstream)
        return self

    def _await_welcome(self, deadline: float) -> list:
        while time.monotonic() < deadline:
            r, _, _ = __import__("select").select([self._up.sock], [], [], 0.5)
            if not r:
                continue
            for t, body in self._up.receive():
                if t == MsgType.R_WELCOME:
                    return body
                if t == MsgType.ERROR:
                    raise ConnectionError(f"revati relay: the coordinator refused this host: {body.get('error')}")
            if self._up.closed:
                break
        raise ConnectionError("revati relay: no WELCOME from the coordinator")

    def _create_page(self) -> ClockPage:
        now, anchor, rt_delta = self._page_start
        page = ClockPage.create(self.page_path, sock_path=self.sock_path, protocol_version=PROTOCOL_VERSION,
                                dilation=self.dilation, start_ns=now, realtime_delta_ns=rt_delta)
        page.anchor(anchor - realtime_offset(), now)  # exactly the coordinator's clock, however late
        return page

    def stop(self) -> None:
        super().stop()
        if self._up:
            self._up.close()

    @property
    def connected(self) -> bool:
        return self._up is not None and not self._up.closed

    # -------------------------------------------------------- from the shims

    def _freeze_page(self, delta: int) -> None:
        """A process here took or dropped a FREEZE: the coordinator freezes every host's clock
        (R_FREEZE_ALL) while any holds one, so this host does not freeze alone."""
        if self._up is not None and not self._up.closed:
            self._up.send(MsgType.R_FREEZE, [delta])
        elif delta > 0:
            self.stats.freezes_ignored += 1

    def _comm(self, a: Actor, body: list) -> None:
        self._up.send(MsgType.R_COMM, [global_pid(self.host_id, a.pid), int(body[0]), int(body[1]), int(body[2])])

    def _arrive(self, a: Actor, body: list) -> None:
        self.stats.arrive_msgs += 1
        self._up.send(MsgType.R_ARRIVE, [global_pid(self.host_id, a.pid), body])

    def _resolve(self, a: Actor, body: list) -> None:
        req, wait = int(body[0]), int(body[1])
        keys = [(body[k], body[k + 1], body[k + 2]) for k in range(2, len(body) - 2, 3)]
        self._rid += 1
        self._remote[self._rid] = (a, req)
        if wait:
            a.resolving = (req, keys)
            self.stats.resolve_waits += 1
        else:
            self.stats.resolve_asks += 1
        self._up.send(MsgType.R_RESOLVE, [global_pid(self.host_id, a.pid), self._rid, wait] + list(body[2:]))

    def _process_left(self, pid: int) -> None:
        if self._up:
            self._up.send(MsgType.R_GONE, [global_pid(self.host_id, pid)])

    def _check_lost_ranks(self) -> None:
        pass  # the coordinator holds the collectives

    # --------------------------------------------------- from the coordinator

    def _read_upstream(self) -> None:
        for t, body in self._up.receive():
            if t == MsgType.R_PREPARE:
                ok = self._still_quiet()
                if ok:
                    self.page.hold()
                    self._held = (int(body[0]), time.monotonic())
                self._up.send(MsgType.R_READY, [int(body[0]), int(ok)])
                if not ok:
                    self._unreport()
            elif t == MsgType.R_JUMP:
                self._seen += 1
                self._move_page(int(body[0]), int(body[2]), int(body[1]))
                self._wake_due(int(body[1]))
            elif t == MsgType.R_ABORT:
                if self._held is not None and self._held[0] == int(body[0]):
                    self.page.release()
                    self._held = None
            elif t == MsgType.R_FREEZE_ALL:
                if self._held is not None:  # (the coordinator aborts its round first)
                    self.page.release()
                    self._held = None
                if not self._coord_frozen:
                    self._coord_frozen = time.monotonic_ns()
                    self.page.freeze()
                self._up.send(MsgType.R_FROZEN, [int(body[0]), self.page.now_ns()])
            elif t == MsgType.R_THAW:
                self._seen += 1
                if self._coord_frozen:
                    self.stats.frozen_ns += time.monotonic_ns() - self._coord_frozen
                    self._coord_frozen = 0
                    self.page.thaw()
                skip = self.page.anchor(int(body[2]) - realtime_offset(), int(body[1]))
                if skip:
                    self.stats.jumps += 1
                    self.stats.jumped_ns += skip
                self._wake_due(int(body[1]))
            elif t == MsgType.R_RESOLVED:
                self._seen += 1
                a, req = self._remote.pop(int(body[0]), (None, 0))
                if a is not None and a.conn.fileno() >= 0:
                    a.resolving = None
                    self._send(a, MsgType.RESOLVED, [req] + list(body[1:]))
                    self._gen += 1
                    self._woken += 1
            elif t == MsgType.R_DEADLOCK:
                self._deadlock_here(str(body[0]))
            elif t == MsgType.ERROR:
                log.error("relay: the coordinator says: %s", body)
        if self._up.closed and not self._stop.is_set():
            if self._coord_frozen:  # nobody is left to thaw it
                self._coord_frozen = 0
                self.page.thaw()
            print(f"revati relay: lost the coordinator at {self.coordinator[0]}:{self.coordinator[1]}; "
                  "this host's clock now runs on real time", file=sys.stderr, flush=True)
            try:
                self._sel.unregister(self._up.sock)
            except (KeyError, ValueError):
                pass

    def _still_quiet(self) -> bool:
        """PREPARE's test: nothing changed since our QUIET, and a fresh sample agrees."""
        if self._reported is None or self._unread_input() or self._reported[0] != self._gen:
            return False
        actors = [a for a in self._actors.values() if a.greeted]
        if not actors:
            return True
        scan = _c_scanner()
        if scan is None:
            return self._snapshot() is not None
        pids = sorted({a.pid for a in actors})
        exempt = [a.tid for a in actors if a.state == WAITING]
        parr = (ctypes.c_int32 * len(pids))(*pids)
        earr = (ctypes.c_int32 * len(exempt))(*exempt)
        self.stats.samples += 1
        return scan.quiet(parr, len(pids), earr, len(exempt)) == 0

    def _move_page(self, token: int, anchor_realtime: int, target: int) -> None:
        # The page reads target at the local monotonic instant of the coordinator's anchor.
        r0 = anchor_realtime - realtime_offset()
        if self._held is not None and self._held[0] == token:
            skip = self.page.release(r0, target)
        else:  # held too long and released, or a host that joined during the round
            self.page.release()
            skip = self.page.anchor(r0, target)
            self.stats.late_jumps += 1
        self._held = None
        if skip:
            self.stats.jumps += 1
            self.stats.jumped_ns += skip

    def _wake_due(self, target: int) -> None:
        due = sorted((a for a in self._actors.values()
                      if a.greeted and a.state == WAITING and 0 <= a.deadline <= target),
                     key=lambda a: (a.deadline, a.kind, a.pid, a.tid))
        v = self.page.now_ns()
        for a in due:
            a.state = RUNNING
            self._send(a, MsgType.WAKE, [a.seq, v])
            self.stats.wakes += 1
        self._gen += 1

    def _deadlock_here(self, message: str) -> None:
        lines = [message, f"Threads on host {self.name}:"]
        for a in sorted((a for a in self._actors.values() if a.greeted), key=lambda a: (a.pid, a.tid)):
            lines.append("  " + describe_wait(a.pid, a.tid, a))
        self.deadlock = "\n".join(lines)
        print(self.deadlock, file=sys.stderr, flush=True)
        for pid in sorted({a.pid for a in self._actors.values() if a.greeted}):
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass

    # ------------------------------------------------------------ quiescence

    def _wake_overdue(self) -> None:
        if self._held is None:  # (reading a held page would wait for ourselves)
            super()._wake_overdue()

    def _try_jump(self) -> None:
        if self._held is not None:
            if time.monotonic() - self._held[1] < self.hold_timeout_s:
                return
            log.warning("relay: no JUMP or ABORT %.1f s after READY; releasing the clock", self.hold_timeout_s)
            self.page.release()
            self._held = None
            self._unreport()
        if self._up is None or self._up.closed:
            return super()._try_jump() if self._up is None else None
        samples, self._quiet_seen = self.stats.samples, False
        if not any(a.greeted for a in self._actors.values()):
            self._report(-1, -1)
        else:
            super()._try_jump()
            if self.stats.samples != samples and not self._quiet_seen:
                self._unreport()  # a sample found work
        if self._reported is not None and self._reported[0] != self._gen:
            self._unreport()

    def _jump(self, waiting: list[Actor]) -> None:
        """Called by the quiescence test when this host is quiet: report, do not jump."""
        if self._unread_input():
            self.stats.aborted_jumps += 1
            return
        if self._no_jump_now():  # a thread here does the emulator's own work: not quiet
            self.stats.held_jumps += 1
            return
        self._quiet_seen = True
        waiting = [a for a in self._actors.values() if a.greeted and a.state == WAITING and a.deadline >= 0]
        firm = [a.deadline for a in waiting if not a.lazy]
        lazy = [a.deadline for a in waiting if a.lazy]
        self._report(min(firm) if firm else -1, min(lazy) if lazy else -1)

    def _report(self, firm: int, lazy: int) -> None:
        r = (self._gen, self._seen, firm, lazy)
        if r != self._reported:
            self._reported = r
            self._up.send(MsgType.R_QUIET, [self._seen, firm, lazy])

    def _unreport(self) -> None:
        if self._reported is not None:
            self._reported = None
            self._up.send(MsgType.R_BUSY, [])
