"""Sidecar throughput: predictions per second for batched PREDICT requests.

Starts the sidecar in its own process (as deployed: one sidecar process per pod, the shim is a
C client) on an ipc:// endpoint and sends batches from a DEALER client in this process. The
request payloads are built and msgpack-packed before the clock starts, so the figure is the
sidecar's (receive, decode, validate, predict, reply), not the Python client's. Workloads:
  hot      the same batch again and again (exact-key cache hits)
  grid     GEMMs of known weight shapes at fresh token counts (m-grid hits)
  fresh    attention decode batches, all_reduce sizes and norms never seen before (every op
           misses the exact-key cache; they needed LightGBM before the family grids)
  prefill  attention prefill chunks never seen before (memoised 2^(1/128) buckets: a new
           bucket is a batched model call)
  latency  one fresh decode-attention op per request, as the shim's step-attention misses and
           prefetches send them: the round trip's median and p90 in microseconds (--batch is
           not used)
Each workload runs --repeat times; the median is printed with the spread, and the sidecar's
STATS show how many ops went to the model. The load average is printed before and after, and
beside the wall-clock rate the rate per CPU-second of the sidecar process (its user + system
time from /proc): on a loaded host the process gets a share of a core, and this is what one
core does for it.

Before/after on a loaded host: --baseline DIR starts a second sidecar from an older tree and
alternates the two run by run (new, old, new, old ...), so both see the same load. DIR must
hold an older `revati` package with its sidecar as `revati/sidecar`, e.g.
  git archive <rev> revati sidecar | tar -x -C /tmp/base && mv /tmp/base/sidecar /tmp/base/revati/
It runs with PYTHONPATH=DIR (only that directory, never the repo root) and this checkout's
profiles (REVATI_PROFILES_DIR).

Run:  .venv/bin/python benchmarks/bench_sidecar.py [--gpu h100-sxm] [--batch 1024] [--seconds 3]
      [--repeat 5] [--baseline DIR] [--workloads hot,grid,fresh,prefill]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from revati.sidecar import SidecarClient
from revati.sidecar.protocol import MsgType, pack, type_frame, unpack


def _serve(ep: str, gpu: str) -> None:
    from revati.sidecar.server import serve

    serve(ep, gpu)


def _start_baseline(ep: str, gpu: str, tree: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    env.setdefault("REVATI_PROFILES_DIR", str(Path(__file__).resolve().parents[1] / "profiles"))
    code = ("import sys; from revati.sidecar.server import serve; "
            "serve(sys.argv[1], sys.argv[2])")
    return subprocess.Popen([sys.executable, "-c", code, ep, gpu], env=env, cwd=tree)


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process `pid`, all threads (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _run(client: SidecarClient, payloads: list[bytes], nops: int, seconds: float,
         start: int) -> tuple[float, int]:
    """Sends pre-packed requests until `seconds` pass; returns (ops/s, next payload index)."""
    frame = type_frame(MsgType.PREDICT)
    n = 0
    i = start
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        reply = client.send_frames([frame, payloads[i % len(payloads)]])
        if reply[0] != frame:
            raise RuntimeError(f"sidecar error: {unpack(reply[1])}")
        n += nops
        i += 1
    if len(payloads) > 1 and i - start > len(payloads):
        print(f"  (warning: {i - start} requests wrapped {len(payloads)} prepared payloads)")
    return n / (time.perf_counter() - t0), i


def _latency(sides: dict[str, SidecarClient], repeat: int, n: int = 400) -> None:
    """Round trips of one fresh decode-attention op each (a Llama-3-8B step one token further
    on each time), n per run, the sides alternating run by run."""
    frame = type_frame(MsgType.PREDICT)
    times: dict[str, list[float]] = {s: [] for s in sides}
    for r in range(repeat):
        for side, c in sides.items():
            for i in range(n):
                u = (r * len(sides) + list(sides).index(side)) * n + i + 1
                op = {"op": "attention", "phase": "decode", "batch_size": 32, "num_tokens": 32,
                      "kv_len_sum": 32 * 500 + 32 * u, "kv_len_max": 500 + u, "attn_pairs": 32 * 500 + 32 * u,
                      "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "dtype": "bf16"}
                payload = pack({"ops": [op]})
                t0 = time.perf_counter()
                reply = c.send_frames([frame, payload])
                times[side].append(time.perf_counter() - t0)
                if reply[0] != frame:
                    raise RuntimeError(f"sidecar error: {unpack(reply[1])}")
    for side, ts in times.items():
        ts.sort()
        label = "latency" if len(sides) == 1 else f"latency {side}"
        print(f"  {label:17s} round trip of one op: median {ts[len(ts) // 2] * 1e6:,.0f} us, "
              f"p90 {ts[int(len(ts) * 0.9)] * 1e6:,.0f} us ({len(ts)} requests)", flush=True)
    if len(sides) > 1:
        med = {s: sorted(t)[len(t) // 2] for s, t in times.items()}
        print(f"  latency: new / baseline median = {med['new'] / med['baseline']:.2f} "
              f"(load average now {_load()})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default=None,
                    help="directory holding an older revati package to alternate with")
    ap.add_argument("--workloads", default="hot,grid,fresh,prefill,latency")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    ep = f"ipc://{tmp}/bench.sock"
    proc = mp.get_context("spawn").Process(target=_serve, args=(ep, a.gpu), daemon=True)
    proc.start()
    client = SidecarClient(ep, timeout_s=600)
    client.hello(a.gpu)
    sides = {"new": client}
    pids = {"new": proc.pid}
    base_proc = None
    if a.baseline:
        bep = f"ipc://{tmp}/baseline.sock"
        base_proc = _start_baseline(bep, a.gpu, a.baseline)
        sides["baseline"] = SidecarClient(bep, timeout_s=600)
        sides["baseline"].hello(a.gpu)
        pids["baseline"] = base_proc.pid
    B = a.batch
    shapes = [(12288, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
    hot = [{"op": "gemm", "m": 1 + j % 512, "n": shapes[j % 4][0], "k": shapes[j % 4][1]}
           for j in range(B)]
    nreq = int(a.seconds * a.repeat * 400_000 / B) + 8  # more than the fastest run sends

    def grid(i: int) -> list[dict]:
        base = 1 + (i * B) % 60000
        return [{"op": "gemm", "m": base + j, "n": shapes[j % 4][0], "k": shapes[j % 4][1]}
                for j in range(B)]

    def fresh(i: int) -> list[dict]:
        out = []
        for j in range(B):
            u = i * B + j
            r = u % 3
            if r == 0:
                out.append({"op": "attention", "phase": "decode", "batch_size": 1 + u % 256,
                            "kv_len_sum": 1000 + u, "num_heads": 32, "num_kv_heads": 8,
                            "head_dim": 128})
            elif r == 1:
                out.append({"op": "collective", "kind": "all_reduce", "bytes": 4096 + 16 * u,
                            "ranks": 8})
            else:
                out.append({"op": "norm", "tokens": 1 + u % 16384, "hidden": 4096 + 8 * (u % 7)})
        return out

    def prefill(i: int) -> list[dict]:
        out = []
        for j in range(B):
            u = i * B + j
            q = 16 + u % 4096
            out.append({"op": "attention", "query_lens": [q], "seq_lens": [q + (u // 7) % 8192],
                        "num_heads": 32, "num_kv_heads": 8, "head_dim": 128})
        return out

    print(f"preparing payloads ({nreq} requests per workload) ...", flush=True)
    builders = {"hot": lambda: [pack({"ops": hot})],
                "grid": lambda: [pack({"ops": grid(i)}) for i in range(nreq)],
                "fresh": lambda: [pack({"ops": fresh(i)}) for i in range(nreq)],
                "prefill": lambda: [pack({"ops": prefill(i)}) for i in range(min(nreq, 200))]}
    names = a.workloads.split(",")
    work = {name: builders[name]() for name in names if name != "latency"}
    for c in sides.values():
        c.predict(hot)  # warm the cache
    print(f"sidecar throughput on {os.cpu_count()} CPUs, gpu={a.gpu}, batch={B}, "
          f"{a.seconds:g} s x {a.repeat} runs per workload"
          + (f", alternating with the baseline {a.baseline}" if a.baseline else "")
          + f"; load average {_load()}:", flush=True)
    for name, payloads in work.items():
        rates: dict[str, list[float]] = {s: [] for s in sides}
        cpu_rates: dict[str, list[float]] = {s: [] for s in sides}
        idx = {s: 0 for s in sides}
        before = {s: c.stats()["predictor"] for s, c in sides.items()}
        for _ in range(a.repeat):
            for side, c in sides.items():
                c0 = _cpu_s(pids[side])
                rate, i0 = _run(c, payloads, B, a.seconds, idx[side])
                c1 = _cpu_s(pids[side])
                rates[side].append(rate)
                if c0 is not None and c1 is not None and c1 > c0:
                    # predictions per CPU-second of the sidecar process: what one core does
                    # for it, whatever share of a core the host's load leaves it
                    cpu_rates[side].append((i0 - idx[side]) * B / (c1 - c0))
                idx[side] = i0
        for side, c in sides.items():
            after = c.stats()["predictor"]
            ops = after["ops"] - before[side]["ops"]
            model = after["model"] - before[side]["model"]
            label = f"{name}" if len(sides) == 1 else f"{name} {side}"
            cpu = (f"; per sidecar CPU-second median {statistics.median(cpu_rates[side]):,.0f}"
                   if cpu_rates[side] else "")
            print(f"  {label:17s} median {statistics.median(rates[side]):10,.0f} predictions/s "
                  f"(runs {', '.join(f'{r / 1000:.0f}k' for r in rates[side])}){cpu}; "
                  f"{ops:,} ops, {model:,} through the model", flush=True)
        if len(sides) > 1:
            cpu = ""
            if cpu_rates["new"] and cpu_rates["baseline"]:
                cpu = (f", per CPU-second "
                       f"{statistics.median(cpu_rates['new']) / statistics.median(cpu_rates['baseline']):.2f}")
            print(f"  {name}: new / baseline median = "
                  f"{statistics.median(rates['new']) / statistics.median(rates['baseline']):.2f}"
                  f"{cpu} (load average now {_load()})", flush=True)
    if "latency" in names:
        _latency(sides, a.repeat)
    print(f"load average at the end {_load()}")
    print("reproduce: .venv/bin/python benchmarks/bench_sidecar.py "
          f"--gpu {a.gpu} --batch {B} --seconds {a.seconds:g} --repeat {a.repeat}"
          + (f" --baseline {a.baseline}" if a.baseline else "")
          + (f" --workloads {a.workloads}" if a.workloads != "hot,grid,fresh,prefill" else ""))
    for c in sides.values():
        c.close()
    if base_proc is not None:
        base_proc.terminate()
        base_proc.wait(10)
    proc.terminate()
    proc.join(10)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
