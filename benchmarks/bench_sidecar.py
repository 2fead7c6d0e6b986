"""Sidecar throughput: predictions per second for batched PREDICT requests.

Starts a sidecar on an ipc:// endpoint in this process (I/O thread + busy loop threads) and
sends batches from a DEALER client. Three workloads:
  hot      the same batch again and again (exact-key cache hits)
  grid     GEMMs of known weight shapes at fresh token counts (bucketed-grid hits)
  model    new attention/collective/norm ops every request (LightGBM on every op)

Run:  .venv/bin/python benchmarks/bench_sidecar.py [--gpu h100-sxm] [--batch 1024] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from revati.predictor import Predictor
from revati.sidecar import SidecarClient, SidecarServer


def _run(client: SidecarClient, make_batch, seconds: float) -> tuple[float, int]:
    n = 0
    i = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = make_batch(i)
        client.predict(batch)
        n += len(batch)
        i += 1
    return n / (time.perf_counter() - t0), i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    ep = f"ipc://{tempfile.mkdtemp()}/bench.sock"
    server = SidecarServer(ep, predictor=Predictor.load(a.gpu)).start_in_thread()
    client = SidecarClient(ep, timeout_s=60)
    client.hello(a.gpu)
    shapes = [(12288, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
    hot = [{"op": "gemm", "m": 1 + j % 512, "n": shapes[j % 4][0], "k": shapes[j % 4][1]}
           for j in range(a.batch)]

    def grid(i: int) -> list[dict]:
        base = 1 + (i * a.batch) % 60000
        return [{"op": "gemm", "m": base + j, "n": shapes[j % 4][0], "k": shapes[j % 4][1]}
                for j in range(a.batch)]

    def model(i: int) -> list[dict]:
        out = []
        for j in range(a.batch):
            u = i * a.batch + j
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

    client.predict(hot)  # warm the cache
    print(f"sidecar throughput on {os.cpu_count()} CPUs, gpu={a.gpu}, batch={a.batch}:")
    for name, fn in (("hot", lambda i: hot), ("grid", grid), ("model", model)):
        rate, reqs = _run(client, fn, a.seconds)
        print(f"  {name:6s} {rate:12,.0f} predictions/s  ({reqs} requests)")
    print("reproduce: .venv/bin/python benchmarks/bench_sidecar.py "
          f"--gpu {a.gpu} --batch {a.batch} --seconds {a.seconds:g}")
    client.close()
    server.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
