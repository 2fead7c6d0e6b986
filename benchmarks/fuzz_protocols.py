"""Long fuzz runs of the emulator's protocols; prints inputs tried, replies by kind and failures.

    .venv/bin/python benchmarks/fuzz_protocols.py --protocol sidecar -n 100000
    .venv/bin/python benchmarks/fuzz_protocols.py --protocol timekeeper -n 100000
    .venv/bin/python benchmarks/fuzz_protocols.py --protocol coordinator -n 100000

The sidecar run drives SidecarServer.handle (the function the ROUTER loop calls for each
message) with the generators of tests/sidecar/fuzz.py; every reply is checked as in the CI
test (tests/sidecar/test_fuzz.py, 3000 inputs). A failure stops the run and prints the
shrunk input."""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, settings  # noqa: E402


def run_fuzz(test, n: int, seed: int) -> tuple[int, float]:
    """Runs a @given test for n inputs from seed; returns (failures 0/1, seconds), printing the
    shrunk failing input, if any."""
    from hypothesis import seed as hseed

    run = settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
                   database=None, derandomize=False, print_blob=True)(test)
    t0 = time.monotonic()
    try:
        hseed(seed)(run)()
        return 0, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - the report is the point
        import traceback
        print("FAILURE:\n" + "".join(traceback.format_exception(e))[-4000:])
        return 1, time.monotonic() - t0


def fuzz_sidecar(n: int, seed: int) -> int:
    from revati.predictor import Predictor
    from revati.sidecar import SidecarServer
    from tests.sidecar.fuzz import messages
    from tests.sidecar.test_fuzz import check_reply

    server = SidecarServer("inproc://unused", predictor=Predictor.load("h100-sxm"))
    replies: collections.Counter[str] = collections.Counter()

    @given(messages)
    def one(frames):
        reply = server.handle([b"peer", *frames])
        payload = check_reply(frames, reply)
        replies[payload.get("code", "ok")] += 1

    failures, dt = run_fuzz(one, n, seed)
    server.shutdown()
    tried = sum(replies.values())
    print(f"sidecar: {tried} inputs in {dt:.0f} s ({tried / dt:.0f}/s), failures {failures}")
    for code, count in replies.most_common():
        print(f"  {code:<12} {count}")
    return failures


def fuzz_timekeeper(n: int, seed: int) -> int:
    """Random packet sequences from actors that said HELLO, over the Timekeeper's real socket
    (tests/timewarp/test_protocol_fuzz.py's generator); after each, the loop must live and a
    fresh actor get its WELCOME. Counts the connections the Timekeeper refused."""
    import logging

    from revati.timekeeper.timekeeper import Timekeeper
    from tests.timewarp.test_protocol_fuzz import packets, poke

    logging.getLogger("revati.timekeeper").setLevel(logging.ERROR)  # one warning per refusal
    tried = [0]
    with Timekeeper() as tk:
        @given(packets)
        def one(pkts):
            tried[0] += 1
            poke(tk, pkts)

        failures, dt = run_fuzz(one, n, seed)
        print(f"timekeeper: {tried[0]} packet sequences in {dt:.0f} s ({tried[0] / dt:.0f}/s), "
              f"refused {tk.stats.refused}, failures {failures}")
    return failures


def fuzz_coordinator(n: int, seed: int) -> int:
    """Sessions of hostile peers over the coordinator's real TCP socket, half before the
    handshake (without the secret), half after it (tests/timewarp/coordinator_fuzz.py), beside a
    well-formed host that must keep jumping with causal times (checked every 25 sessions)."""
    import logging

    from hypothesis import strategies as st

    from tests.timewarp.coordinator_fuzz import Harness, poke_authenticated, poke_unauthenticated, pre_auth, sessions

    logging.getLogger("revati.timekeeper").setLevel(logging.ERROR)  # one warning per refused peer
    h = Harness()
    try:
        @given(st.one_of(pre_auth.map(lambda x: ("pre", x)), sessions.map(lambda x: ("auth", x))))
        def one(case):
            kind, items = case
            out = poke_unauthenticated(h.coord.address, items, h.replay) if kind == "pre" else \
                poke_authenticated(h.coord.address, items)
            h.record(out)
            h.check()

        failures, dt = run_fuzz(one, n, seed)
        h.check(every=1)
    finally:
        h.stop()
    print(f"coordinator: {h.sessions} sessions in {dt:.0f} s ({h.sessions / dt:.0f}/s), refused "
          f"{h.coord.stats.refused}, good host jumps {h.good.jumps}, restarts after a declared deadlock "
          f"{h.restarts}, failures {failures}")
    for code, count in sorted(h.codes.items(), key=lambda kv: -kv[1]):
        print(f"  {code:<12} {count}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["sidecar", "timekeeper", "coordinator"], default="sidecar")
    ap.add_argument("-n", type=int, default=100_000, help="inputs to try")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"command: .venv/bin/python benchmarks/fuzz_protocols.py --protocol {args.protocol} "
          f"-n {args.n} --seed {args.seed}")
    return {"sidecar": fuzz_sidecar, "timekeeper": fuzz_timekeeper,
            "coordinator": fuzz_coordinator}[args.protocol](args.n, args.seed)


if __name__ == "__main__":
    sys.exit(main())
