"""Multi-host virtual time in network namespaces: vLLM TP=2 with its two ranks on two "hosts".

Runs the same deterministic workload twice and compares TTFT and TPOT:
1. single host: `vllm serve --tensor-parallel-size 2` and `vllm bench serve` on one Timekeeper
   (`revati exec --clock`);
2. three network namespaces joined by a bridge (ip netns, veth, 10.77.0.0/24), each with its own
   `revati relay` to a `revati coordinator` in the root namespace: rank 0 and the API server
   (`vllm serve --nnodes 2 --node-rank 0`) in rv-node0, rank 1 (`--node-rank 1 --headless`) in
   rv-node1, and `vllm bench serve` in rv-client. Each namespace sees only its own addresses; the
   ranks talk over the veths (torch.distributed/gloo, vLLM's ZeroMQ queues), the virtual clock
   over TCP to the coordinator.

Both runs use `--host-contention count` semantics (relays run no contention governor) and the
constant:10ms predictor, so a step's virtual time is set by its kernel count: the comparison tests
the clock, not the predictor or this CPU. Requests go one at a time (--max-concurrency 1). Needs root (ip netns). Reproduce with:
    .venv/bin/python benchmarks/netns_multihost.py [--prompts 6] [--input-len 64] [--output-len 32]
Prints both runs' TTFT/TPOT (mean, median) and their relative differences; exit 1 if a
difference exceeds --tolerance (default 2%).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO)) if str(REPO) not in sys.path else None
from revati.engines.base import VENV_BIN  # noqa: E402
from revati.launch.processes import free_port  # noqa: E402
from revati.timekeeper.netns import Hosts, available  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B"
NAMESPACES = ("rv-node0", "rv-node1", "rv-client")
METRICS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms")


def revati(*args: str) -> list[str]:
    return [sys.executable, "-m", "revati.cli", *args]


def wait_health(url: str, procs: list[subprocess.Popen], logs: list[Path], probe_prefix: list[str],
                timeout: float = 1500) -> None:
    """Polls url/health with curl (run through probe_prefix, e.g. into the client's namespace)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise RuntimeError(f"a server process exited ({p.returncode}):\n{log.read_text()[-4000:]}")
        probe = probe_prefix + ["curl", "-sf", "-m", "2", f"{url}/health"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError("vllm serve did not come up")


def bench_cmd(url: str, args, out: Path) -> list[str]:
    return [str(VENV_BIN / "vllm"), "bench", "serve", "--backend", "vllm", "--base-url", url, "--model", MODEL,
            "--dataset-name", "random", "--random-input-len", str(args.input_len), "--random-output-len",
            str(args.output_len), "--num-prompts", str(args.prompts), "--request-rate", str(args.rate),
            "--ignore-eos", "--seed", "0", "--max-concurrency", str(args.max_concurrency), "--save-result", "--result-dir", str(out.parent),
            "--result-filename", out.name]


def run_bench(cmd: list[str], out: Path) -> dict:
    """Runs `vllm bench serve` (cmd writes its result to out); the result plus its wall seconds."""
    t0 = time.monotonic()
    b = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=REPO)
    if b.returncode:
        raise RuntimeError(b.stdout[-3000:] + b.stderr[-3000:])
    r = json.loads(out.read_text())
    r["wall_s"] = time.monotonic() - t0
    return r


def serve_args(port: int, host: str) -> list[str]:
    return [str(VENV_BIN / "vllm"), "serve", MODEL, "--load-format", "dummy", "--host", host, "--port", str(port),
            "--max-model-len", "1024", "--tensor-parallel-size", "2", "--disable-custom-all-reduce",
            "--max-num-seqs", "4", "--enforce-eager"]
# NOTE: --enforce-eager: with torch.compile, a rank that finds its compiled graph in the cache
# skips a gloo barrier (vLLM's all-reduce fusion pass asks which ranks share a node) that a
# rank compiling afresh calls: with caches from earlier runs differing per rank, the fresh rank
# waits 30 min (virtual) and fails. Eager steps are the same on both runs.


def session_pids(sid: int) -> list[int]:
    """Every process of session sid (children put themselves in process groups of their own)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    out.append(int(d))
            except OSError:
                pass
    return out


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each command (it forwards to its children), then SIGKILL to whatever of its
    session is left after 60 s."""
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 60
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        for pid in session_pids(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.wait()


def single_host(args, work: Path) -> dict:
    clock = f"/dev/shm/revati-netns-single-{os.getpid()}"
    port = free_port()
    log = work / "single-server.log"
    exe = revati("exec", "--clock", clock, "--predictor", args.predictor, "--host-contention", "count", "--")
    server = subprocess.Popen(exe + serve_args(port, "127.0.0.1"), stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    try:
        t0 = time.monotonic()
        wait_health(f"http://127.0.0.1:{port}", [server], [log], [])
        print(f"single host: server up after {time.monotonic() - t0:.0f} s", flush=True)
        out = work / "single-bench.json"
        return run_bench(exe + bench_cmd(f"http://127.0.0.1:{port}", args, out), out)
    finally:
        stop([server])


def multi_host(args, work: Path) -> dict:
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        log = work / f"{name}.log"
        p = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        procs.append(p)
        logs.append(log)
        return p

    with Hosts(list(NAMESPACES)) as hosts:
        try:
            coord = f"{hosts.gateway}:7070"
            secret = work / "secret"  # the deployment's secret: generated by the coordinator, read by the relays
            secret.unlink(missing_ok=True)
            start("coordinator", revati("coordinator", "--listen", coord, "--stats-file", str(work / "coordinator.json"),
                                        "--secret-file", str(secret)))
            t0 = time.monotonic()
            while not secret.exists() and time.monotonic() - t0 < 60:
                time.sleep(0.05)
            dirs = {}
            for ns in NAMESPACES:
                dirs[ns] = work / ns
                dirs[ns].mkdir(exist_ok=True)
                start(f"relay-{ns}", hosts.wrap(ns, revati("relay", "--coordinator", coord, "--dir", str(dirs[ns]),
                                                           "--host-name", ns, "--stats-file", str(dirs[ns] / "relay.json"),
                                                           "--secret-file", str(secret))))
            for ns in NAMESPACES:
                t0 = time.monotonic()
                while not (dirs[ns] / "clock").exists():
                    if time.monotonic() - t0 > 60:
                        raise RuntimeError(f"relay in {ns} did not start: {(work / f'relay-{ns}.log').read_text()}")
                    time.sleep(0.1)

            def exe(ns: str) -> list[str]:
                return revati("exec", "--clock", str(dirs[ns] / "clock"), "--predictor", args.predictor, "--")

            master = hosts.addresses["rv-node0"]
            for rank, ns in enumerate(("rv-node0", "rv-node1")):
                ip, nic = hosts.addresses[ns], hosts.interfaces[ns]
                # One virtual GPU per host: vLLM places ranks on nodes by device count.
                env = ["env", "REVATI_NUM_GPUS=1", f"VLLM_HOST_IP={ip}", f"GLOO_SOCKET_IFNAME={nic}",
                       f"NCCL_SOCKET_IFNAME={nic}", f"REVATI_NODE_NAME={ns}"]
                cmd = serve_args(8000, ip) + ["--nnodes", "2", "--node-rank", str(rank), "--master-addr", master,
                                              "--master-port", "29511"] + (["--headless"] if rank else [])
                start(f"{ns}-server", hosts.wrap(ns, exe(ns) + env + cmd))
            t0 = time.monotonic()
            wait_health(f"http://{master}:8000", procs, logs, ["ip", "netns", "exec", "rv-client"])
            print(f"multi host: server up after {time.monotonic() - t0:.0f} s", flush=True)
            out = work / "multi-bench.json"
            return run_bench(hosts.wrap("rv-client", exe("rv-client") + bench_cmd(f"http://{master}:8000", args, out)),
                             out)
        finally:
            stop(procs)
            coord_stats = work / "coordinator.json"
            if coord_stats.exists():
                print(f"coordinator: {coord_stats.read_text()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--rate", default="inf", help="request rate (default inf: all at once)")
    ap.add_argument("--max-concurrency", type=int, default=1,
                    help="requests in flight (default 1: each request meets an idle server, so TTFT is one "
                         "prefill step on both runs; with a burst, which step a request joins depends on "
                         "the client's CPU timing, which moves TTFT by whole steps)")
    ap.add_argument("--predictor", default="constant:10ms",
                    help="default constant:10ms: a step's virtual time is its kernel count x 10 ms, so "
                         "TTFT and TPOT measure the clock, not this CPU (whose share differs between the "
                         "runs: the multi-host one also runs three relays and a coordinator)")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--only", choices=("single", "multi"))
    ap.add_argument("--workdir")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop servers, remove namespaces
    why = available()
    if why:
        print(f"netns_multihost: {why}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="revati-netns-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}  (work dir {work}, load "
          f"{open('/proc/loadavg').read().split()[:3]})", flush=True)
    results = {}
    if args.only != "multi":
        results["single"] = single_host(args, work)
    elif (work / "single-bench.json").exists():  # an earlier single-host run in this work dir
        results["single"] = json.loads((work / "single-bench.json").read_text())
        results["single"].setdefault("wall_s", float("nan"))
    if args.only != "single":
        results["multi"] = multi_host(args, work)
    for name, r in results.items():
        print(f"{name:>6}: " + ", ".join(f"{m} {r[m]:.2f}" for m in METRICS)
              + f", completed {r['completed']}, {r['duration']:.2f} virtual s in {r['wall_s']:.1f} wall s")
    (work / "comparison.json").write_text(json.dumps({k: {m: v[m] for m in METRICS} for k, v in results.items()}))
    if len(results) < 2:
        return 0
    worst = 0.0
    for m in METRICS:
        s, mh = results["single"][m], results["multi"][m]
        d = abs(mh - s) / s
        if m.startswith("median"):
            worst = max(worst, d)
        print(f"{m}: single {s:.2f}, multi-host {mh:.2f}: {100 * d:.2f}% apart")
    ok = worst <= args.tolerance
    print(f"{'MATCH' if ok else 'MISMATCH'}: largest difference of the medians {100 * worst:.2f}% "
          f"(tolerance {100 * args.tolerance:g}%; the means include the first request, whose CPU-side "
          "warm-up on this host differs between runs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
