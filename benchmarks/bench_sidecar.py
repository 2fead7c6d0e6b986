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
Each workload runs --repeat times; the median is printed with the spread, and the sidecar's
STATS show how many ops went to the model.

Run:  .venv/bin/python benchmarks/bench_sidecar.py [--gpu h100-sxm] [--batch 1024] [--seconds 3]
      [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

from revati.sidecar import SidecarClient
from revati.sidecar.protocol import MsgType, pack, type_frame, unpack


def _serve(ep: str, gpu: str) -> None:
    from revati.sidecar.server import serve

    serve(ep, gpu)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    ep = f"ipc://{tempfile.mkdtemp()}/bench.sock"
    proc = mp.get_context("spawn").Process(target=_serve, args=(ep, a.gpu), daemon=True)
    proc.start()
    client = SidecarClient(ep, timeout_s=600)
    client.hello(a.gpu)
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
    work = {"hot": [pack({"ops": hot})],
            "grid": [pack({"ops": grid(i)}) for i in range(nreq)],
            "fresh": [pack({"ops": fresh(i)}) for i in range(nreq)],
            "prefill": [pack({"ops": prefill(i)}) for i in range(min(nreq, 200))]}
    client.predict(hot)  # warm the cache
    print(f"sidecar throughput on {os.cpu_count()} CPUs, gpu={a.gpu}, batch={B}, "
          f"{a.seconds:g} s x {a.repeat} runs per workload:")
    for name, payloads in work.items():
        rates = []
        idx = 0
        before = client.stats()["predictor"]
        for _ in range(a.repeat):
            rate, idx = _run(client, payloads, B, a.seconds, idx)
            rates.append(rate)
        after = client.stats()["predictor"]
        ops = after["ops"] - before["ops"]
        model = after["model"] - before["model"]
        print(f"  {name:8s} median {statistics.median(rates):10,.0f} predictions/s "
              f"(runs {', '.join(f'{r / 1000:.0f}k' for r in rates)}); "
              f"{ops:,} ops, {model:,} through the model")
    print("reproduce: .venv/bin/python benchmarks/bench_sidecar.py "
          f"--gpu {a.gpu} --batch {B} --seconds {a.seconds:g} --repeat {a.repeat}")
    client.close()
    proc.terminate()
    proc.join(10)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
