"""The Timekeeper: conservative time warp with a global min-deadline barrier.

Actors are threads of emulated processes. Each is RUNNING or WAITING(until a virtual deadline).
The shim announces deadline waits (WAIT/RUN); threads that block without a deadline, or in a
call the shim does not interpose, announce nothing: the Timekeeper reads their state from
/proc instead. The deployment is *quiescent* when, at two samples a quiescence window apart,
every announced actor is WAITING, no thread of any joined process is runnable, and no thread
that is not WAITING got CPU in between. Then nobody can cause anything before the earliest
deadline, so the clock jumps there, in one epoch, and exactly the due actors are woken, in
(deadline, kind, pid, tid) order.

A process that never blocks keeps the deployment from quiescence: its deadlines then expire
in real time (scaled by dilation), which is slower but still correct. Processes join when the
shim loads and leave when their connections close, which the kernel does at exit or on a
crash, so a dead process never freezes the clock.

What a quiescent host does next is its upstream's call (upstream.py). By default
(LocalUpstream) the host is the whole deployment: the clock jumps here, and NCCL collectives
are resolved here too (collectives.py): ranks send their arrivals without waiting, and a thread
that needs a collective's end (a sync) asks for it and blocks, idle like any thread blocked in
the kernel, until the last rank has arrived. A collective that lacks a rank whose process has
left can never end: a thread waiting for it is a deadlock at once. A host of a multi-host
deployment has a relay.Relay upstream instead, which asks the Coordinator.

Modules: actor.py (the actor), tasks.py (threads' scheduler states from /proc or the C
scanner), upstream.py (the policy), collectives.py (the collective table and its waits).
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from revati.timekeeper.actor import LAZY, RUNNING, WAITING, Actor
from revati.timekeeper.clock_page import ClockPage
from revati.timekeeper.collectives import CollectiveTable, Key
from revati.timekeeper.protocol import (
    NS_MAX, PROTOCOL_VERSION, MsgType, PayloadError, decode, encode, parse_actor_message)
from revati.timekeeper.tasks import TaskReader, Tasks, c_scanner, describe_wait, int32s, ran, snapshot
from revati.timekeeper.upstream import LocalUpstream, Upstream

log = logging.getLogger(__name__)

#: An announced wait's kind in a fault report (shim/src/timewarp.h's kinds).
_WAIT_WORDS = {0: "waiting for the GPU", 1: "sleeping", 2: "waiting with a timeout", 3: "on a condition variable",
               4: "on a semaphore", 5: "yield-spinning"}

# A JIT freeze blocks jumps for at most this long (wall s); see Timekeeper._no_jump_now.
FREEZE_JUMP_AFTER_S = 30.0


@dataclass
class TimekeeperStats:
    jumps: int = 0
    jumped_ns: int = 0
    wakes: int = 0
    overdue_wakes: int = 0  # wakes of waiters whose deadline passed while the clock ran
    actors_seen: int = 0
    processes_seen: int = 0
    samples: int = 0
    arrive_msgs: int = 0  # ARRIVE messages (a batch per graph replay, one per eager call)
    resolve_asks: int = 0  # RESOLVE requests answered at once (queries, ends already known)
    resolve_waits: int = 0  # RESOLVE requests that waited for a rank
    aborted_jumps: int = 0  # quiescent samples voided by a message read just before the jump
    late_jumps: int = 0  # relays: cross-host jumps applied after the page's hold had timed out
    freezes: int = 0  # FREEZE +1 messages (one per Triton JIT compile or load in vLLM)
    frozen_ns: int = 0  # real ns the clock stood still for them
    freezes_ignored: int = 0  # relays without a coordinator link: FREEZEs not forwarded
    holds: int = 0  # FREEZE [+1, 1] messages: the emulator's own work (a prediction sidecar miss)
    held_ns: int = 0  # real ns the clock was held for them
    refused: int = 0  # malformed messages: ERROR to the sender, which was dropped
    held_jumps: int = 0  # quiescent samples that did not jump because a hold was in force
    turns: int = 0  # turns of the loop (a select and a quiescence test)
    messages: int = 0  # actor messages read, ARRIVEs included
    wait_msgs: int = 0  # WAIT messages (an actor announced a wait)
    run_msgs: int = 0  # RUN messages (an actor left its wait by itself)
    busy_samples: int = 0  # samples that found a thread runnable
    ran_samples: int = 0  # idle samples after which a thread that is not WAITING had run
    sample_ns: int = 0  # wall ns in the C scanner's samples (rv_tk_quiet)
    counts_samples: int = 0  # C samples decided by the run counts alone (tk_scan.c's NOTE)
    ring_samples: int = 0  # busy C samples decided by a recently busy thread
    state_reads: int = 0  # thread states the C scanner read


@dataclass
class _Sample:
    t: float
    gen: int
    tasks: Tasks = field(default_factory=dict)


class Timekeeper:
    """One per deployment. Use as a context manager, or start()/stop().

    Args:
        quiescence_s: how long (real seconds) everything must stay waiting before a jump.
        dilation: CPU work counts 1/dilation of its wall time in virtual time.
        run_dir: folder for the socket (default: a fresh temporary folder).
        shm_dir: folder for the clock page (default /dev/shm).
        deadlock_s: when every thread of every joined process has stayed blocked this long
            (real seconds) with no virtual deadline to jump to, nothing can ever wake them: the
            Timekeeper reports each waiting thread (``deadlock``), calls on_deadlock with the
            report, and by default kills the joined processes so the run ends. None: never.
        on_deadlock: called with the report instead of killing the joined processes.
        page_path: the clock page's path (default: a fresh name in shm_dir). Other process
            trees join this deployment's clock with REVATI_TIMEWARP=1 REVATI_CLOCK=page_path
            (`revati exec --timewarp --clock PATH`).
        upstream: what decides jumps, freezes and collectives (upstream.py); default
            LocalUpstream: this Timekeeper, for a deployment on one host.
    """

    def __init__(self, *, quiescence_s: float = 0.002, dilation: float = 1.0, deadlock_s: float | None = 5.0,
                 on_deadlock: "Callable[[str], None] | None" = None,
                 run_dir: str | os.PathLike | None = None, shm_dir: str | os.PathLike = "/dev/shm",
                 page_path: str | os.PathLike | None = None, upstream: Upstream | None = None):
        self.quiescence_s = quiescence_s
        self.deadlock_s = deadlock_s
        self.on_deadlock = on_deadlock
        self.deadlock: str | None = None  # the report, once a deadlock was found
        self._stall_since: float | None = None
        self.dilation = dilation
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="revati-tk-"))
        self.sock_path = str(self.run_dir / "tk.sock")
        self.page_path = Path(page_path) if page_path else Path(shm_dir) / f"revati-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.page: ClockPage | None = None
        self.stats = TimekeeperStats()
        self._actors: dict[int, Actor] = {}  # by fd
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._gen = 0
        self._sample: _Sample | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._tasks = TaskReader()
        self._sampled_gen = -1
        self._sampled_t = 0.0
        self._busy_samples = 0
        self._c_baseline = False
        self._scan_base: dict[str, int] | None = None  # the C scanner's counters at start()
        self.upstream = upstream or LocalUpstream()
        self.upstream.bind(self)
        # Bumped whenever a thread may have become runnable (a RUN, a new or closed connection,
        # a RESOLVED sent): unread input that does not bump it cannot invalidate a jump.
        self._woken = 0
        self._rbuf = bytearray(1 << 20)
        self._frozen_since: int | None = None
        self._holds = 0  # holds in force, all actors
        self._held_since: int | None = None
        self.crashed: str | None = None  # the traceback, if the loop died
        self.loop_turned: float | None = None  # time.monotonic() of the loop's last turn

    @property
    def collectives(self) -> CollectiveTable | None:
        """The collectives resolved on this host (None under a relay: its coordinator's)."""
        return self.upstream.waits.table if self.upstream.waits is not None else None

    # ------------------------------------------------------------------ lifecycle

    def env(self) -> dict[str, str]:
        """The variables that put a process tree on this Timekeeper's clock."""
        return {"REVATI_TIMEWARP": "1", "REVATI_CLOCK": str(self.page_path)}

    def start(self) -> "Timekeeper":
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)  # owner-only: connecting needs write permission (docs/security.md)
        self._listener.listen(256)
        self._listener.setblocking(False)
        self.page = self.upstream.create_page()
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        scan = c_scanner()
        self._scan_base = scan.counters() if scan is not None else None
        self._thread = threading.Thread(target=self._busy_loop, name="revati-timekeeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, join_s: float = 5.0) -> None:
        """Stops the loop and removes the page and the socket. Idempotent.

        join_s: how long to wait for the loop (a hung one is left behind: a daemon thread)."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(join_s)
        scan = c_scanner()
        if scan is not None and self._scan_base is not None:
            now = scan.counters()  # the scanner is the process's: this run's share
            for k in ("counts_samples", "ring_samples", "state_reads"):
                setattr(self.stats, k, now[k] - self._scan_base[k])
        for a in list(self._actors.values()):
            a.conn.close()
        self._actors.clear()
        if self._listener:
            self._listener.close()
        self._tasks.close()
        if self.page:
            self.page.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        if self._own_run_dir:
            try:
                self.run_dir.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "Timekeeper":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def now_ns(self) -> int:
        """Virtual monotonic ns now."""
        assert self.page is not None
        return self.page.now_ns()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def announced_tasks(self) -> set[tuple[int, int]]:
        """(pid, tid) of every thread that announced itself, and of each of their processes'
        main thread. Safe from another thread (the contention governor's): it reads a snapshot."""
        live = [a for a in list(self._actors.values()) if a.pid]
        return {(a.pid, a.tid) for a in live if a.tid} | {(a.pid, a.pid) for a in live}

    def describe_actors(self, limit: int = 12) -> list[str]:
        """What the announced threads are doing, for a fault report: per process, its threads
        counted by what they wait on (or that they run), then its first waiting thread in full
        (tasks.describe_wait). Safe from another thread (a snapshot); at most limit processes."""
        from collections import Counter

        by_pid: dict[int, list[Actor]] = {}
        for a in sorted((a for a in list(self._actors.values()) if a.greeted), key=lambda a: (a.pid, a.tid)):
            if os.path.exists(f"/proc/{a.pid}/task/{a.tid}"):  # (gone threads' connections may linger)
                by_pid.setdefault(a.pid, []).append(a)
        lines = []
        for pid, actors in list(by_pid.items())[:limit]:
            what = Counter(_WAIT_WORDS.get(a.kind, f"wait kind {a.kind}") if a.state == WAITING else "not in an announced wait"
                           for a in actors)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
            except OSError:
                cmd = "?"
            lines.append(f"pid {pid} ({cmd}): {len(actors)} thread(s): "
                         + ", ".join(f"{n} {w}" for w, n in what.most_common()))
            first = next((a for a in actors if a.state == WAITING), actors[0])
            lines.append("    e.g. " + describe_wait(pid, first.tid, first))
        if len(by_pid) > limit:
            lines.append(f"... and {len(by_pid) - limit} more process(es)")
        return lines

    # ------------------------------------------------------------ for the upstream

    @property
    def gen(self) -> int:
        """Bumped whenever an actor may have changed state."""
        return self._gen

    def actors(self) -> list[Actor]:
        """The actors that have said HELLO."""
        return [a for a in self._actors.values() if a.greeted]

    def add_link(self, sock: socket.socket, on_input: Callable[[], None]) -> None:
        """Has the loop call on_input whenever sock is readable (the upstream's own link)."""
        self._sel.register(sock, selectors.EVENT_READ, on_input)

    def remove_link(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def count_jump(self, skip: int) -> None:
        """Counts a move of the page forward by skip ns (0: it did not move)."""
        if skip:
            self.stats.jumps += 1
            self.stats.jumped_ns += skip

    def wake_due(self, target: int) -> None:
        """Wakes the WAITING actors whose deadline is at most target (the page has reached it),
        in (deadline, kind, pid, tid) order."""
        due = sorted((a for a in self._actors.values()
                      if a.greeted and a.state == WAITING and 0 <= a.deadline <= target),
                     key=lambda a: (a.deadline, a.kind, a.pid, a.tid))
        v = self.page.now_ns()
        for a in due:
            a.state = RUNNING
            self._send(a, MsgType.WAKE, [a.seq, v])
            self.stats.wakes += 1
        self._gen += 1

    def answer(self, a: Actor, req: int, ends: list[int]) -> None:
        """RESOLVED [req, end...] to a: a thread that waited for collectives may run."""
        self._send(a, MsgType.RESOLVED, [req] + ends)
        self._gen += 1
        self._woken += 1

    def confirm_quiet(self) -> bool:
        """A fresh sample agrees that the host is still quiescent: no thread of a joined process
        is runnable, and none but WAITING actors got a CPU since the last sample."""
        actors = self.actors()
        if not actors:
            return True
        scan = c_scanner()
        if scan is None:
            return self._snapshot() is not None
        pids = sorted({a.pid for a in actors})
        exempt = [a.tid for a in actors if a.state == WAITING]
        parr, earr = int32s(pids), int32s(exempt)
        self.stats.samples += 1
        return scan.quiet(parr, len(pids), earr, len(exempt)) == 0

    # --------------------------------------------------------------------- loop

    def _busy_loop(self) -> None:
        # NOTE: one thread does socket I/O, decoding and decisions. The wake path (decide,
        # publish, send WAKE) is latency-critical and short; handing it between threads
        # through queues would only add wake-up latency to every jump.
        tick = self.quiescence_s / 2
        try:
            self._turn(tick)
        except BaseException:  # noqa: BLE001 - kept for the runner's watchdog (revati/run/faults.py)
            import traceback

            self.crashed = traceback.format_exc()
            log.error("timekeeper: the loop died:\n%s", self.crashed)

    def _turn(self, tick: float) -> None:
        while not self._stop.is_set():
            self.loop_turned = time.monotonic()
            self.stats.turns += 1
            for key, _ in self._sel.select(timeout=tick):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._wake_r.recv(64)
                elif callable(key.data):  # the upstream's link (add_link)
                    key.data()
                else:
                    self._read(key.fileobj)
            try:
                self._wake_overdue()
                self._try_jump()
            except Exception:  # never let one bad sample kill the clock
                log.exception("timekeeper: quiescence check failed")

    def _wake_overdue(self) -> None:
        """Wakes WAITING actors whose deadline the running clock has passed.

        A timed wait sleeps the real span its deadline is away at the rate of the moment; when
        the clock speeds up afterwards (the contention governor lowers the dilation, or a jump
        moved it part of the way), that real timer fires late. Waking them here bounds the
        lateness to one tick of this loop plus the wake-up.
        """
        if self.page is None or self.page.held:  # (reading a held page would wait for ourselves)
            return
        now = None
        for a in self._actors.values():
            if a.state == WAITING and a.deadline >= 0:
                if now is None:
                    now = self.page.now_ns()
                if a.deadline <= now:
                    a.state = RUNNING
                    self._send(a, MsgType.WAKE, [a.seq, now])
                    self.stats.wakes += 1
                    self.stats.overdue_wakes += 1
                    self._gen += 1

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self._woken += 1
            self._actors[conn.fileno()] = Actor(conn)
            self._sel.register(conn, selectors.EVENT_READ, "actor")

    def _freeze(self, a: Actor, delta: int, hold: bool = False) -> None:
        """FREEZE [+1 | -1]: the clock stands still while any actor holds a freeze, and does not
        jump for up to FREEZE_JUMP_AFTER_S (_no_jump_now). The upstream decides how
        (Upstream.freeze): LocalUpstream freezes this page (freeze_clock); a relay forwards it,
        and the coordinator freezes every host, since one frozen host would fall behind the others.

        FREEZE [+1 | -1, 1] is a *hold*: the emulator's own work inside an emulated thread (the
        shim asking the prediction sidecar for an op it has not seen). The clock stands still
        and, unlike a JIT freeze, never jumps while a hold is in force: the holding thread is
        blocked in a real wait that the quiescence test would read as idle, and a jump then would
        move the clock across the reply (measured before the hold: 200 GEMM misses beside a
        thread with a 50 ms timer took 333 virtual seconds). Holds bump the wake count, so a
        jump decided on samples taken before the hold arrived is voided (unread_input)."""
        if delta not in (1, -1) or (delta < 0 and (a.held if hold else a.frozen - a.held) == 0):
            return
        a.frozen += delta
        if hold:
            a.held += delta
            self._hold(delta)
        elif delta > 0:
            self.stats.freezes += 1
        self.upstream.freeze(delta)

    def _no_jump_now(self) -> bool:
        """Whether a hold, or a JIT freeze younger than FREEZE_JUMP_AFTER_S, forbids a jump.

        A JIT compile is work that a warmed-up server does not do, so nothing else may happen
        during it either: while the compiling thread waits for ptxas (a process off the clock)
        the deployment looks quiescent, and a jump then moved the clock to another thread's
        timer (steps of 117-175 virtual ms around a compile in a default-spec run). A freeze
        older than FREEZE_JUMP_AFTER_S of wall time lets jumps happen again, so a thread that
        froze the clock and then waits for a timer cannot hang the deployment."""
        if self._holds > 0:
            return True
        return (self._frozen_since is not None
                and time.monotonic_ns() - self._frozen_since < FREEZE_JUMP_AFTER_S * 1e9)

    def _hold(self, delta: int) -> None:
        self._holds += delta
        if delta > 0:
            self._woken += 1
            self.stats.holds += 1
            if self._holds == 1:
                self._held_since = time.monotonic_ns()
        elif self._holds == 0 and self._held_since is not None:
            self.stats.held_ns += time.monotonic_ns() - self._held_since
            self._held_since = None

    def freeze_clock(self, delta: int) -> None:
        """Freezes this host's page (+1) or ends one freeze (-1), timing how long it stood still."""
        if delta > 0:
            if not self.page.frozen:
                self._frozen_since = time.monotonic_ns()
            self.page.freeze()
        else:
            self.page.thaw()
            if not self.page.frozen and self._frozen_since is not None:
                self.stats.frozen_ns += time.monotonic_ns() - self._frozen_since
                self._frozen_since = None

    def _drop(self, a: Actor) -> None:
        while a.frozen > 0:  # what an exiting process left frozen (or held)
            a.frozen -= 1
            if a.held > 0:
                a.held -= 1
                self._hold(-1)
            self.upstream.freeze(-1)
        self._sel.unregister(a.conn)
        self._actors.pop(a.conn.fileno(), None)
        a.conn.close()
        self._gen += 1
        self._woken += 1
        if a.resolving is not None:
            a.resolving.done = True
            a.resolving = None
        if a.greeted and not any(o.pid == a.pid for o in self._actors.values()):
            self.upstream.left(a.pid)

    def _send(self, a: Actor, t: MsgType, payload) -> None:
        try:
            a.conn.send(encode(t, payload))
        except OSError:
            pass  # its EOF comes through the selector

    def _refuse(self, a: Actor, code: str, message: str) -> None:
        """A malformed message: ERROR to its sender, which is dropped (and logged)."""
        self.stats.refused += 1
        log.warning("timekeeper: dropped actor pid %s tid %s: %s: %s", a.pid, a.tid, code, message[:300])
        self._send(a, MsgType.ERROR, {"error": message, "code": code})
        self._drop(a)

    def _read(self, conn: socket.socket) -> None:
        a = self._actors.get(conn.fileno())
        if a is None:
            return
        while True:
            try:
                n = conn.recv_into(self._rbuf)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if not n:
                self._drop(a)
                return
            try:
                t, body = decode(bytes(memoryview(self._rbuf)[:n]))
            except ValueError as e:
                self._refuse(a, "bad_msgpack", str(e))
                return
            try:
                parse_actor_message(t, body)
            except PayloadError as e:
                self._refuse(a, "bad_payload", str(e))
                return
            self.stats.messages += 1
            if t == MsgType.ARRIVE:  # no actor changes state: no new sample needed
                self.stats.arrive_msgs += 1
                self.upstream.arrive(a, body)
                continue
            self._gen += 1
            if t == MsgType.HELLO:
                if body[0] != PROTOCOL_VERSION:
                    self._refuse(a, "version", f"protocol version {PROTOCOL_VERSION} expected, got {body!r:.200}")
                    return
                a.pid, a.tid, a.greeted = int(body[1]), int(body[2]), True
                self._woken += 1
                self.upstream.joined(a.pid)  # (an exec'ed process joins again)
                self.stats.actors_seen += 1
                if not any(o.pid == a.pid for o in self._actors.values() if o is not a):
                    self.stats.processes_seen += 1
                self._send(a, MsgType.WELCOME, [PROTOCOL_VERSION, self.page.get("epoch")])
            elif t == MsgType.WAIT:
                self.stats.wait_msgs += 1
                # NOTE: a timeout of "forever" (threading.TIMEOUT_MAX ...) may come as a deadline
                # near int64's end; 146 years on, it is as good as never, and stays summable.
                a.seq, a.deadline, kind = body[0], min(body[1], NS_MAX), body[2]
                a.kind, a.lazy = kind & 0xFF, bool(kind & LAZY)
                a.state = WAITING
            elif t == MsgType.RUN:
                self.stats.run_msgs += 1
                if a.state == WAITING and a.seq == int(body[0]):
                    a.state = RUNNING
                    self._woken += 1
            elif t == MsgType.FREEZE:
                self._freeze(a, body[0], hold=bool(len(body) > 1 and body[1]))
            elif t == MsgType.COMM:
                self.upstream.comm(a, body)
            elif t == MsgType.RESOLVE:
                self.upstream.resolve(a, body)
            else:
                self._refuse(a, "bad_type", f"unexpected message type {t}")
                return

    # -------------------------------------------------------------- quiescence

    def _snapshot(self) -> Tasks | None:
        """Scheduler state of every thread of every joined process; None if one is not idle."""
        return snapshot(sorted({a.pid for a in self._actors.values() if a.greeted}), self._tasks)

    def _try_jump(self) -> None:
        """The loop's quiescence test, within the upstream's begin_test and end_test."""
        if not self.upstream.begin_test():
            return
        self._test_quiescence()
        self.upstream.end_test()

    def _test_quiescence(self) -> None:
        """Samples the deployment when an actor changed state, or every quiescence_s otherwise.

        Quiescent: every thread is idle now, and none that is not a WAITING actor got a CPU since
        the previous sample (a WAITING actor may take slices of its own wait, or have just been
        woken and announced its next wait). Anything an actor did that can wake another thread
        shows up as that thread being runnable, or as its run count having moved.
        """
        actors = [a for a in self._actors.values() if a.greeted]
        # WAITING with a deadline; yield-spinners (deadline -1) wait for another thread only.
        spinning = [a for a in actors if a.state == WAITING and a.deadline < 0]
        waiting = [a for a in actors if a.state == WAITING and a.deadline >= 0]
        if not actors or self.deadlock:
            self._sample = self._stall_since = None
            if not actors:
                self.upstream.quiet(-1, -1)  # nothing here can run, nor wake
            return
        now = time.monotonic()
        # With no deadline to jump to, only a deadlock is left to find: sample slowly. While
        # samples keep finding work, back off (up to 4 ms) until an actor changes state.
        interval = min(self.quiescence_s * (1 << min(self._busy_samples, 5)), 0.004)
        if not waiting:
            interval = max(interval, 0.05)
        if self._gen == self._sampled_gen and now - self._sampled_t < interval:
            return
        if self._gen != self._sampled_gen:
            self._busy_samples = 0
        self._sampled_gen, self._sampled_t = self._gen, now
        scan = c_scanner()
        if scan is not None and (waiting or self._stall_since is None and self.deadlock_s is None):
            self._try_jump_c(scan, waiting, spinning)
            return
        tasks = self._snapshot()
        self.stats.samples += 1
        if tasks is None:  # something runs; the last idle sample stays the baseline
            self._busy_samples += 1
            self._stall_since = None
            return
        prev, self._sample = self._sample, _Sample(now, self._gen, tasks)
        waiting_ids = {(a.pid, a.tid) for a in waiting} | {(a.pid, a.tid) for a in spinning}
        if prev is None or ran(prev.tasks, tasks, waiting_ids):
            # A first idle sample, or threads ran since the last one: confirm this one at
            # once against a second sample.
            prev, tasks = self._sample, self._snapshot()
            self.stats.samples += 1
            if tasks is None:
                self._busy_samples += 1
                self._stall_since = None
                return
            self._sample = _Sample(time.monotonic(), self._gen, tasks)
            if ran(prev.tasks, tasks, waiting_ids):
                self._stall_since = None
                self._busy_samples += 1
                return
        if waiting:
            self._stall_since = None
            self._quiescent()
            return
        # Quiescent with no deadline: every thread waits on another, or on nothing.
        # NOTE: not while a hold is in force: a thread then waits on the prediction sidecar,
        # which is working (its first answers can take seconds on a loaded host).
        if self._holds > 0:
            self._stall_since = None
            return
        if self._stall_since is None:
            self._stall_since = prev.t
        if self.deadlock_s is not None and now - self._stall_since >= self.deadlock_s:
            self.declare_deadlock(tasks, now - self._stall_since)

    def _try_jump_c(self, scan, waiting: list[Actor], spinning: list[Actor] = ()) -> None:
        """_test_quiescence's test done by rv_tk_quiet: no per-thread work in Python.

        Yield-spinners' run counts are exempt (they spin), not their state: one that is
        runnable at a sample may have left its spin, so that sample is busy."""
        pids = sorted({a.pid for a in self._actors.values() if a.greeted})
        parr = int32s(pids)
        exempt = [a.tid for a in waiting] + [a.tid for a in spinning]
        earr = int32s(exempt)
        self._sample = None  # the Python baseline is stale now
        self._stall_since = None
        for attempt in (0, 1):  # a first idle scan, or one after activity, is confirmed at once
            self.stats.samples += 1
            t0 = time.perf_counter_ns()
            r = scan.quiet(parr, len(pids), earr, len(exempt))
            self.stats.sample_ns += time.perf_counter_ns() - t0
            if r < 0:
                self._busy_samples += 1
                self.stats.busy_samples += 1
                return
            if r == 1:
                self.stats.ran_samples += 1
            if r == 0 and self._c_baseline:
                self._quiescent()
                return
            self._c_baseline = True
        self._busy_samples += 1

    def _collective_waits(self) -> list[tuple[Actor, list[Key]]]:
        """Each thread waiting for a collective's end here, with the collectives that hold it up."""
        cw = self.upstream.waits
        return [(w.who, cw.blockers(w)) for w in cw.pending()] if cw is not None else []

    def declare_deadlock(self, tasks: Tasks | None = None, stalled_s: float = 0.0,
                         headline: str | None = None) -> None:
        """Reports the waiting threads (tasks: every thread of the deployment, or None: the ones
        waiting for a collective) and the collectives they wait for, then ends the run."""
        waits = self._collective_waits()
        if tasks is None:
            tasks = {(a.pid, a.tid): ("S", 0) for a, _ in waits}
        lines = [headline or f"revati: time warp: deadlock: every thread of the {len({p for p, _ in tasks})} "
                 f"emulated process(es) has been blocked for {stalled_s:.1f} s of wall time with no virtual "
                 f"deadline to jump to (virtual time {self.now_ns() / 1e9:.6f} s); nothing can wake them. Waiting:"]
        announced = {(a.pid, a.tid): a for a in self._actors.values() if a.greeted}
        coll_of = {(a.pid, a.tid): b for a, b in waits}
        for (pid, tid) in sorted(tasks):
            line = "  " + describe_wait(pid, tid, announced.get((pid, tid)))
            if (pid, tid) in coll_of:
                line += "; waits for the end of a collective"
            lines.append(line)
        blockers = sorted({k for _, b in waits for k in b})
        if blockers:
            lines.append("Collectives that lack a rank:")
            lines += ["  " + self.upstream.waits.table.describe(k) for k in blockers]
        self.end_deadlocked("\n".join(lines), {p for p, _ in tasks})

    def end_deadlocked(self, report: str, pids: set[int] = frozenset()) -> None:
        """Ends a run that can never go on: keeps report as ``deadlock``, then hands it to
        on_deadlock, or prints it and kills pids and every joined process."""
        self.deadlock = report
        log.debug("%s", report)
        if self.on_deadlock is not None:
            self.on_deadlock(report)
            return
        print(report, file=sys.stderr, flush=True)
        for pid in sorted(set(pids) | {a.pid for a in self._actors.values() if a.greeted}):
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass

    def unread_input(self) -> bool:
        """Reads what actors sent since the last select (a thread may send a message and block
        between the select and the samples). True if that may have made a thread runnable (a
        RUN, an ARRIVE or RESOLVE answered, a new or closed connection): the samples no longer
        tell whether a jump is safe. A WAIT only adds a deadline to the jump's choice."""
        woken = self._woken
        for key, _ in self._sel.select(0):
            if key.data == "actor":
                self._read(key.fileobj)
            elif key.data == "listen":
                self._accept()
        return woken != self._woken

    def _quiescent(self) -> None:
        """The samples found the host quiescent: its earliest deadlines go to the upstream, unless
        input read now, or a hold or a young freeze, voids the samples."""
        if self.unread_input():
            self.stats.aborted_jumps += 1
            return
        if self._no_jump_now():
            self.stats.held_jumps += 1
            return
        waiting = [a for a in self._actors.values() if a.greeted and a.state == WAITING and a.deadline >= 0]
        firm = [a.deadline for a in waiting if not a.lazy]
        lazy = [a.deadline for a in waiting if a.lazy]
        self.upstream.quiet(min(firm) if firm else -1, min(lazy) if lazy else -1)
