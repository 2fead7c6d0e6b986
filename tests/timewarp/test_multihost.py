"""Multi-host virtual time (issue 6): a Coordinator and one Relay per host over TCP. Each test
puts processes on different relays ("hosts"; here on 127.0.0.1) and checks what the
single-host Timekeeper tests check: one causal clock, jumps across hosts, collectives resolved
across hosts. tests/run/test_netns_multihost.py runs vLLM with its ranks in separate network
namespaces."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from revati.timekeeper import netns
from revati.timekeeper.coordinator import Coordinator
from revati.timekeeper.link import global_pid, parse_address, split_pid
from revati.timekeeper.relay import Relay
from tests.timewarp._timewarp import finish, spawn, tw_env
from tests.timewarp.test_causality import PING
from tests.timewarp.test_collectives import MS, RANK, SLACK, _check_resolved


class RelayProcess:
    """`revati relay` in its own process, as on a real host (its /proc scanner's state is
    per process). env() puts a process on its clock, like Timekeeper.env()."""

    def __init__(self, coord: Coordinator, d: Path, name: str, wrap=None):
        self.dir, self.name = d, name
        self.stats_file = d / "stats.json"
        host, port = coord.address
        secret = d / "secret"
        secret.write_bytes(coord.secret)
        cmd = [sys.executable, "-m", "revati.cli", "relay", "--coordinator", f"{host}:{port}",
               "--dir", str(d), "--host-name", name, "--stats-file", str(self.stats_file),
               "--secret-file", str(secret)]
        self.proc = subprocess.Popen(wrap(cmd) if wrap else cmd, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (d / "clock").exists():
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "relay did not start"
            time.sleep(0.02)

    def env(self) -> dict[str, str]:
        return {"REVATI_TIMEWARP": "1", "REVATI_CLOCK": str(self.dir / "clock")}

    def stop(self) -> tuple[dict, str]:
        """SIGTERM; returns (its counters, its stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return json.loads(self.stats_file.read_text()), err


@pytest.fixture
def hosts(tmp_path):
    """A coordinator and two relays (hosts "a" and "b")."""
    with Coordinator(("127.0.0.1", 0)) as coord:
        relays = []
        try:
            for name in ("a", "b"):
                d = tmp_path / name
                d.mkdir()
                relays.append(RelayProcess(coord, d, name))
            yield coord, relays
        finally:
            for r in relays:
                if r.proc.poll() is None:
                    r.stop()


@pytest.fixture
def netns_hosts(tmp_path):
    """A coordinator on a bridge and two relays, each in its own network namespace."""
    why = netns.available()
    if why:
        pytest.skip(f"network namespaces: {why}")
    hosts = netns.Hosts(["rv-t-a", "rv-t-b"], prefix="10.78.0", bridge="rv-brt")
    try:
        hosts.up()
    except RuntimeError as e:  # e.g. a container without CAP_SYS_ADMIN
        hosts.down()
        pytest.skip(f"network namespaces cannot be made here: {e}")
    try:
        with Coordinator((hosts.gateway, 0)) as coord:
            relays = []
            try:
                for ns in hosts.names:
                    d = tmp_path / ns
                    d.mkdir()
                    relays.append(RelayProcess(coord, d, ns, wrap=lambda c, ns=ns: hosts.wrap(ns, c)))
                yield hosts, coord, relays
            finally:
                for r in relays:
                    if r.proc.poll() is None:
                        r.stop()
    finally:
        hosts.down()


SLEEPER = r'''
import json, sys, time
t0, w0 = time.monotonic(), time.perf_counter()
time.sleep(float(sys.argv[1]))
print(json.dumps({"t0": t0, "t1": time.monotonic(), "rt": time.time()}))
'''


def test_sleeps_on_two_hosts_jump_together(hosts):
    """A 30 s and a 60 s sleep on different hosts end at 30 and 60 virtual s in a few wall s:
    neither host jumps past the other's earlier deadline."""
    coord, (ra, rb) = hosts
    t_wall = time.monotonic()
    pa = spawn(ra, SLEEPER, "30")
    pb = spawn(rb, SLEEPER, "60")
    a, b = (json.loads(o) for o in finish(pa, pb, timeout=60))
    wall = time.monotonic() - t_wall
    assert 30 <= a["t1"] - a["t0"] < 30.5
    assert 60 <= b["t1"] - b["t0"] < 60.5
    # One clock: the hosts' start times are within the processes' start-up of each other.
    assert abs(a["t0"] - b["t0"]) < 5
    assert wall < 30, wall
    assert coord.stats.jumps >= 2
    assert ra.stop()[0]["jumps"] >= 1 and rb.stop()[0]["jumps"] >= 1


def test_ping_pong_across_hosts(hosts):
    """test_causality's ping-pong (50 ms of GPU work on one side, 100 ms on the other, a blocking
    socket between them) with the two processes on different hosts: a message never arrives
    before it was sent, though the hosts' clocks jump in separate processes."""
    coord, (ra, rb) = hosts
    a, b = socket.socketpair()
    rounds = 5
    ping = spawn(ra, PING, "ping", str(a.fileno()), "50", str(rounds), pass_fds=(a.fileno(),),
                 REVATI_PREDICTOR="constant:1ms")
    pong = spawn(rb, PING, "pong", str(b.fileno()), "100", str(rounds), pass_fds=(b.fileno(),),
                 REVATI_PREDICTOR="constant:1ms")
    a.close()
    b.close()
    p, q = (json.loads(o) for o in finish(ping, pong, timeout=120))
    slack = 0.02
    for i in range(rounds):
        sent, got = p["log"][2 * i][1], q["log"][2 * i][1]
        replied, back = q["log"][2 * i + 1][1], p["log"][2 * i + 1][1]
        assert sent <= got < sent + slack
        assert 0.100 <= replied - got < 0.100 + slack
        assert replied <= back < replied + slack
    # A jump needs a PREPARE round trip to every relay on top of the quiescence samples, so
    # under load some waits expire in real time first (exact either way: see the timings above).
    assert coord.stats.jumps >= 1


FREEZER = r'''
import ctypes, json, socket, sys, time
s = socket.socket(fileno=int(sys.argv[2]))
def busy(x):  # CPU work: process time is real under the shim, monotonic time virtual
    c = time.process_time()
    while time.process_time() - c < x:
        pass
if sys.argv[1] == "a":
    f = ctypes.CDLL(None).revati_clock_freeze
    f.argtypes, f.restype = [ctypes.c_int], ctypes.c_int
    assert f(1) == 0
    busy(0.05)  # the freeze reaches the other host through both relays and the coordinator
    s.sendall(b"g")
    t0 = time.monotonic(); busy(0.4); frozen = time.monotonic() - t0
    s.sendall(b"d")
    assert f(-1) == 0
    assert s.recv(1) == b"x"  # b measured its own clock meanwhile
    t0 = time.monotonic(); busy(0.2); end = time.monotonic(); after = end - t0
    s.sendall(b"y")
    print(json.dumps({"frozen": frozen, "after": after, "end": end}))
else:
    assert s.recv(1) == b"g"
    t0 = time.monotonic()
    assert s.recv(1) == b"d"  # a blocking recv: this host's clock is not waited on
    frozen = time.monotonic() - t0
    s.sendall(b"x")
    assert s.recv(1) == b"y"
    print(json.dumps({"frozen": frozen, "end": time.monotonic()}))
'''


def test_a_freeze_on_one_host_stops_every_hosts_clock(hosts):
    """A Triton JIT compile on the engine's host (a FREEZE there) must stop the load
    generator's host clock too, or the compile lands in the TTFT that host measures."""
    coord, (ra, rb) = hosts
    a, b = socket.socketpair()
    pa = spawn(ra, FREEZER, "a", str(a.fileno()), pass_fds=(a.fileno(),))
    pb = spawn(rb, FREEZER, "b", str(b.fileno()), pass_fds=(b.fileno(),))
    a.close()
    b.close()
    ra_out, rb_out = (json.loads(o) for o in finish(pa, pb, timeout=120))
    assert ra_out["frozen"] < 0.02, ra_out  # 0.4 s of CPU work in a frozen clock
    assert rb_out["frozen"] < 0.05, rb_out  # the other host: frozen as well
    assert ra_out["after"] >= 0.19, ra_out  # thawed: CPU work is virtual time again
    # one clock after the thaw: b reads after a's message, which a sent after its read
    assert 0 <= rb_out["end"] - ra_out["end"] < 0.05, (ra_out, rb_out)
    assert coord.stats.freezes == 1 and not coord.page.frozen
    sa, _ = ra.stop()
    sb, _ = rb.stop()
    assert sa["freezes"] == 1 and sa["freezes_ignored"] == 0 and sb["frozen_ns"] > 0.3e9


@pytest.mark.parametrize("mode,n", [("eager", 2), ("graph", 6)])
def test_collectives_across_hosts(hosts, tmp_path, mode, n):
    """test_collectives' two NCCL ranks on different hosts: every collective ends at
    max(arrivals) + 1 ms on both, resolved by the coordinator."""
    coord, relays = hosts
    trace = tmp_path / "trace.json"
    a, b = socket.socketpair()
    env = {"REVATI_PREDICTOR": "constant:1ms", "REVATI_TRACE": str(trace)}
    procs = [spawn(relays[r], RANK, str(r), str(sk.fileno()), str((5, 10)[r]), mode, pass_fds=(sk.fileno(),),
                   **env) for r, sk in enumerate((a, b))]
    a.close()
    b.close()
    p0, p1 = (json.loads(o) for o in finish(*procs, timeout=120))
    colls = _check_resolved(trace, [p0["pid"], p1["pid"]], n)
    if mode == "eager":
        for r, (p, nk) in enumerate(((p0, 5), (p1, 10))):
            assert p["eager"][0] + nk * MS <= colls[0]["arrivals"][r] <= p["eager"][0] + nk * MS + SLACK
        assert p0["eager"][1] >= p1["eager"][0] + 12 * MS  # rank 0 waited for rank 1's work
    assert coord.collectives.resolved >= n
    assert coord.stats.resolves >= 1


def test_a_lost_rank_on_another_host_is_a_deadlock(hosts, tmp_path):
    """Rank 1 (host b) dies before its all-reduce; rank 0 (host a) waits for it: the coordinator
    declares the deadlock naming the lost rank and host a's relay kills rank 0."""
    coord, relays = hosts
    a, b = socket.socketpair()
    env = {"REVATI_PREDICTOR": "constant:1ms"}
    procs = [spawn(relays[r], RANK, str(r), str(sk.fileno()), "5", ("eager", "die")[r], pass_fds=(sk.fileno(),),
                   **env) for r, sk in enumerate((a, b))]
    a.close()
    b.close()
    t0 = time.monotonic()
    for p in procs:
        p.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert procs[1].returncode == -9 and procs[0].returncode == -9
    assert coord.deadlock and "lacks rank 1" in coord.deadlock and "host 2" in coord.deadlock
    stats, err = relays[0].stop()
    assert stats["deadlock"] and "Threads on host a" in stats["deadlock"] and "lacks rank 1" in err


def test_addresses_and_pids():
    assert parse_address("coord:7070") == ("coord", 7070)
    assert parse_address("10.0.0.1") == ("10.0.0.1", 7070)
    for bad in ("coord:x", ":7070", "coord:0"):
        with pytest.raises(ValueError):
            parse_address(bad)
    assert split_pid(global_pid(3, 4_000_000)) == (3, 4_000_000)


def test_relay_without_coordinator_fails_clearly(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    with pytest.raises(ConnectionError, match=f"cannot reach the coordinator at 127.0.0.1:{port}"):
        Relay(("127.0.0.1", port), run_dir=tmp_path, connect_timeout_s=0.5, secret=b"s" * 32).start()


def test_collectives_across_network_namespaces(netns_hosts, tmp_path):
    """The eager all-reduce pair with each rank and its relay in a network namespace of its own:
    the clock's traffic crosses the bridge over TCP, and both ranks see the same ends."""
    hosts, coord, relays = netns_hosts
    trace = tmp_path / "trace.json"
    a, b = socket.socketpair()
    env = {"REVATI_PREDICTOR": "constant:1ms", "REVATI_TRACE": str(trace)}
    procs = []
    for r, sk in enumerate((a, b)):
        cmd = hosts.wrap(hosts.names[r], [sys.executable, "-c", RANK, str(r), str(sk.fileno()), str((5, 10)[r]), "eager"])
        procs.append(subprocess.Popen(cmd, env=tw_env(relays[r], **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, pass_fds=(sk.fileno(),)))
    a.close()
    b.close()
    p0, p1 = (json.loads(o.strip().splitlines()[-1]) for o in finish(*procs, timeout=120))
    colls = _check_resolved(trace, [p0["pid"], p1["pid"]], 2)
    assert p0["eager"][1] >= p1["eager"][0] + 12 * MS  # rank 0 waited for rank 1's work
    assert colls[1]["end"] == colls[0]["end"] + MS
    assert coord.hosts == hosts.names or sorted(coord.hosts) == sorted(hosts.names)
