"""`revati coordinator` and `revati relay`: the two halves of multi-host virtual time
(coordinator.py, relay.py), each run until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from revati import envs
from revati.timekeeper import auth
from revati.timekeeper.coordinator import Coordinator
from revati.timekeeper.link import parse_address
from revati.timekeeper.relay import Relay


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parsers(sub) -> None:
    c = sub.add_parser("coordinator", help="the deployment's clock across hosts: relays connect to it over TCP")
    c.add_argument("--listen", type=_address, default=("0.0.0.0", 7070), metavar="HOST:PORT",
                   help="address to listen on (default 0.0.0.0:7070)")
    c.add_argument("--dilation", type=float, default=1.0, help="CPU time counts 1/dilation (default 1)")
    c.add_argument("--deadlock-s", type=float, default=30.0,
                   help="wall seconds every host may stay blocked with no deadline before the run is "
                        "declared deadlocked (default 30)")
    c.add_argument("--stats-file", type=Path, help="write the coordinator's counters here (JSON) at exit")
    c.add_argument("--secret-file", type=Path, default=_secret_default(),
                   help="the deployment's secret, which every relay must prove it knows (default "
                        "$REVATI_SECRET_FILE); a file that does not exist is created with a new secret, "
                        "owner-only; without either, a new one is written to a fresh folder and its path "
                        "printed")
    c.set_defaults(func=cmd_coordinator)
    r = sub.add_parser("relay", help="this host's Timekeeper, reporting to a coordinator (clock page DIR/clock)")
    add_relay_args(r, required=True)
    r.add_argument("--stats-file", type=Path, help="write the relay's counters here (JSON) at exit")
    r.set_defaults(func=cmd_relay)


def add_relay_args(p, required: bool) -> None:
    p.add_argument("--relay" if not required else "--coordinator", dest="coordinator", type=_address,
                   required=required, metavar="HOST:PORT", help="the `revati coordinator` to relay to")
    p.add_argument("--relay-dir" if not required else "--dir", dest="relay_dir", type=Path,
                   default=Path("/run/revati"),
                   help="folder for the local socket and the clock page <dir>/clock that processes join "
                        "with REVATI_TIMEWARP=1 REVATI_CLOCK=<dir>/clock (default /run/revati)")
    p.add_argument("--host-name", help="this host's name in the coordinator's messages (default: hostname)")
    p.add_argument("--secret-file", type=Path, default=_secret_default(),
                   help="the deployment's secret, the one the coordinator was given or printed "
                        "(default $REVATI_SECRET_FILE)")


def _secret_default() -> Path | None:
    v = envs.get("REVATI_SECRET_FILE")
    return Path(v) if v else None


def coordinator_secret(path: Path | None) -> tuple[bytes, Path, bool]:
    """(secret, its file, whether it was generated now) for `revati coordinator`."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="revati-coordinator-")) / "secret"  # mode 0700
    secret, made = auth.load_or_create(path)
    return secret, path, made


def _until_signal() -> threading.Event:
    done = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: done.set())
    return done


def _write_stats(path: Path | None, stats, **extra) -> None:
    if path is not None:
        path.write_text(json.dumps({**dataclasses.asdict(stats), **extra}))


def cmd_coordinator(args: argparse.Namespace) -> int:
    done = _until_signal()
    try:
        secret, secret_path, made = coordinator_secret(args.secret_file)
    except (auth.SecretError, OSError) as e:
        print(f"revati coordinator: {e}", file=sys.stderr)
        return 2
    try:
        coord = Coordinator(args.listen, dilation=args.dilation, deadlock_s=args.deadlock_s, secret=secret).start()
    except OSError as e:
        print(f"revati coordinator: cannot listen on {args.listen[0]}:{args.listen[1]}: {e}", file=sys.stderr)
        return 2
    print(f"revati coordinator: listening on {coord.address[0]}:{coord.address[1]} "
          f"(dilation {args.dilation:g}); relays join with --secret-file {secret_path}"
          f"{' (a new secret, owner-only)' if made else ''}", file=sys.stderr, flush=True)
    try:
        done.wait()
    finally:
        st = coord.stats
        print(f"revati coordinator: {st.hosts_seen} hosts ({st.refused} peers refused), {st.jumps} jumps skipping {st.jumped_ns / 1e9:.3f} s, "
              f"{st.prepares} prepare rounds ({st.aborted} aborted), {coord.collectives.resolved} collectives "
              f"resolved", file=sys.stderr, flush=True)
        _write_stats(args.stats_file, st, virtual_ns=coord.now_ns(), resolved=coord.collectives.resolved,
                     deadlock=coord.deadlock)
        coord.stop()
    return 0


def start_relay(args: argparse.Namespace) -> Relay:
    """The relay of `revati relay` and `revati sidecar --relay`; exits 2 when it cannot start."""
    args.relay_dir.mkdir(parents=True, exist_ok=True)
    if args.secret_file is None:
        print("revati relay: the deployment's secret is needed: --secret-file FILE (the one `revati "
              "coordinator` printed) or REVATI_SECRET_FILE", file=sys.stderr)
        raise SystemExit(2)
    try:
        secret = auth.read_secret(args.secret_file)
        relay = Relay(args.coordinator, run_dir=args.relay_dir, name=args.host_name, secret=secret).start()
    except (ConnectionError, OSError, auth.SecretError) as e:
        print(f"revati relay: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(f"revati relay: host {relay.name} joined {args.coordinator[0]}:{args.coordinator[1]} as host "
          f"{relay.host_id}; processes join with REVATI_TIMEWARP=1 REVATI_CLOCK={relay.page_path}",
          file=sys.stderr, flush=True)
    return relay


def cmd_relay(args: argparse.Namespace) -> int:
    done = _until_signal()
    relay = start_relay(args)
    try:
        done.wait()
    finally:
        st = relay.stats
        _write_stats(args.stats_file, st, host_id=relay.host_id, deadlock=relay.deadlock)
        relay.stop()
    return 0
