"""A cheap stand-in for vLLM's process tree, to kill its processes in tests of `revati run`.

`python tests/run/fake_deployment.py revati run SPEC --out DIR` runs the real `revati run` (the
real Timekeeper, sidecar, watchdog and report) with the vLLM adapter's two commands replaced:

- serve: an API server (HTTP: /health, /v1/models, streamed /v1/completions) whose engine core
  (a child, titled VLLM::EngineCore_DP0 like vLLM's) starts a worker per TP rank
  (VLLM::Worker_TP<r>); every token is one step: the engine core asks each worker, which sleeps
  2 ms, then sleeps 5 ms itself. Sleeps are the shim's, so the clock jumps over them. Like vLLM,
  an engine core whose worker is gone exits, and an API server whose engine core is gone exits.
- bench: a load generator with vllm bench serve's output marks, Poisson arrivals (seeded) and
  its result JSON (the --save-detailed lists).

REVATI_FAKE_TK_FAULT=crash:PATH or hang:PATH: once the file PATH exists, the Timekeeper's loop
raises (crash) or blocks forever (hang) on the next message it reads, to stand for a bug of the
Timekeeper (before protocol.py's checks, a malformed WAIT raised there and ended the loop).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.abspath(__file__)


# ---------------------------------------------------------------------- the engine's processes

def worker(rank: int) -> None:
    import setproctitle

    setproctitle.setproctitle(f"VLLM::Worker_TP{rank}")
    for line in sys.stdin:
        if line.strip() == "step":
            time.sleep(0.002)
            sys.stdout.write("ok\n")
            sys.stdout.flush()


def engine(tp: int) -> None:
    import setproctitle

    setproctitle.setproctitle("VLLM::EngineCore_DP0")
    workers = [subprocess.Popen([sys.executable, HERE, "worker", str(r)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1) for r in range(tp)] if tp > 1 else []
    for line in sys.stdin:
        n = int(line.split()[1])
        for _ in range(n):
            for w in workers:
                w.stdin.write("step\n")
            for w in workers:
                if w.stdout.readline() != "ok\n":
                    print(f"engine core: worker {w.pid} died", file=sys.stderr, flush=True)
                    os._exit(1)
            time.sleep(0.005)
            sys.stdout.write("tok\n")
            sys.stdout.flush()
        sys.stdout.write("done\n")
        sys.stdout.flush()


def serve(host: str, port: int, tp: int) -> None:
    if os.environ.get("REVATI_FAKE_START_OOM"):  # a spec that cannot fit: the engine's own reason
        time.sleep(0.5)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 896.00 MiB. GPU 0 has a "
              "total capacity of 79.65 GiB", file=sys.stderr, flush=True)
        os._exit(1)
    core = subprocess.Popen([sys.executable, HERE, "engine", str(tp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:
            body = b"{}" if self.path == "/health" else json.dumps({"data": [{"id": "fake"}]}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            n = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["max_tokens"]
            self.send_response(200)
            self.end_headers()
            with lock:
                try:
                    core.stdin.write(f"gen {n}\n")
                    core.stdin.flush()
                except OSError:
                    line = ""
                while True:
                    line = core.stdout.readline()
                    if not line:
                        print("API server: the engine core died; shutting down", file=sys.stderr, flush=True)
                        os._exit(1)
                    if line == "done\n":
                        return
                    self.wfile.write(b"tok\n")
                    self.wfile.flush()

    print(f"API server on {host}:{port}, engine core pid {core.pid}", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()


# ---------------------------------------------------------------------- the load generator

def bench(argv: list[str]) -> int:
    import http.client
    import urllib.parse

    ap = argparse.ArgumentParser()
    for a in ("--base-url", "--result-dir", "--result-filename", "--request-rate"):
        ap.add_argument(a)
    ap.add_argument("--num-prompts", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random-input-len", type=int, default=16)
    ap.add_argument("--random-output-len", type=int, default=8)
    args, _ = ap.parse_known_args(argv)
    url = urllib.parse.urlparse(args.base_url)
    n, out_len = args.num_prompts, args.random_output_len
    rate = float(args.request_rate or "inf")
    res: list[dict | None] = [None] * n

    def one(i: int) -> None:
        r = {"start": time.perf_counter(), "ttft": 0.0, "itl": [], "lat": 0.0, "out": 0, "err": ""}
        try:
            c = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
            c.request("POST", "/v1/completions", json.dumps({"max_tokens": out_len}))
            resp = c.getresponse()
            last = r["start"]
            while resp.readline():
                now = time.perf_counter()
                if r["out"] == 0:
                    r["ttft"] = now - r["start"]
                else:
                    r["itl"].append(now - last)
                last, r["out"] = now, r["out"] + 1
            r["lat"] = time.perf_counter() - r["start"]
            if r["out"] < out_len:
                r["err"] = f"stream ended after {r['out']} of {out_len} tokens"
        except Exception as e:  # noqa: BLE001
            r["err"] = repr(e)
        res[i] = r

    print("Starting main benchmark run...", flush=True)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    threads = []
    for i in range(n):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        print(f"{sum(1 for x in res if x is not None)}/{n} [", flush=True)
        if rate != float("inf"):
            time.sleep(rng.expovariate(rate))
    for t in threads:
        t.join()
    duration = time.perf_counter() - t0
    ok = [r for r in res if not r["err"]]
    result = {
        "backend": "fake", "num_prompts": n, "request_rate": rate, "duration": duration,
        "completed": len(ok), "failed": n - len(ok),
        "total_input_tokens": len(ok) * args.random_input_len, "total_output_tokens": sum(r["out"] for r in ok),
        "request_throughput": len(ok) / duration,
        "input_lens": [args.random_input_len] * n, "output_lens": [r["out"] for r in res],
        "ttfts": [r["ttft"] for r in res], "itls": [r["itl"] for r in res],
        "latencies": [r["lat"] for r in res], "start_times": [r["start"] for r in res],
        "errors": [r["err"] for r in res], "generated_texts": [""] * n,
    }
    with open(os.path.join(args.result_dir, args.result_filename), "w") as f:
        json.dump(result, f)
    print(f"{n}/{n} [\n============ Serving Benchmark Result ============", flush=True)
    return 0


# ---------------------------------------------------------------------- revati run, patched

def install() -> None:
    """Points the vLLM adapter's serve and bench commands at this file."""
    from revati.engines.vllm import VllmAdapter

    def serve_command(self, model, *, host, port, serve_args):
        tp = serve_args[serve_args.index("--tensor-parallel-size") + 1] if "--tensor-parallel-size" in serve_args \
            else "1"
        return [sys.executable, HERE, "serve", host, str(port), tp]

    VllmAdapter.serve_command = serve_command
    VllmAdapter.bench_command = lambda self, args: [sys.executable, HERE, "bench", *args]
    VllmAdapter.prepare = lambda self: None

    fault = os.environ.get("REVATI_FAKE_TK_FAULT")
    if fault:
        from revati.timekeeper.timekeeper import Timekeeper

        how, path = fault.split(":", 1)
        real = Timekeeper._read

        def read(self, conn):
            if os.path.exists(path):
                if how == "crash":
                    raise RuntimeError("injected Timekeeper fault")
                time.sleep(3600)
            return real(self, conn)

        Timekeeper._read = read


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "worker":
        worker(int(argv[1]))
    elif cmd == "engine":
        engine(int(argv[1]))
    elif cmd == "serve":
        serve(argv[1], int(argv[2]), int(argv[3]))
    elif cmd == "bench":
        return bench(argv[1:])
    elif cmd == "revati":
        install()
        from revati.cli import main as revati_main

        return revati_main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ---------------------------------------------------------------------- injecting a fault

#: How each kind of process is found among `revati run`'s descendants (its command line).
TARGETS = {
    "api": lambda cmd: cmd[1:2] == [HERE] and cmd[2:3] == ["serve"],
    "engine": lambda cmd: bool(cmd) and cmd[0].startswith("VLLM::EngineCore"),
    "worker": lambda cmd: cmd[:1] == ["VLLM::Worker_TP1"],
    "loadgen": lambda cmd: cmd[1:2] == [HERE] and cmd[2:3] == ["bench"],
    "sidecar": lambda cmd: cmd[1:4] == ["-m", "revati.cli", "sidecar"],
    "router": lambda cmd: cmd[1:3] == ["-m", "revati.run.router"],
}

SPEC = {
    "apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": "fake"},
    "spec": {
        "model": "meta-llama/Llama-3.1-8B", "gpu": "h100-sxm", "tensorParallelSize": 2,
        "emulation": {"predictor": "roofline", "dilation": 1},
        "workload": {"dataset": {"type": "random", "inputLen": 16, "outputLen": 8},
                     "arrival": {"process": "poisson", "requestRate": 20}, "numPrompts": 400, "seed": 1},
    },
}


class Outcome:
    """What a fault injected into a fake run led to."""

    def __init__(self, rc, output, out, fault_to_exit_s, survivors, injected_at_s):
        self.rc, self.output, self.out = rc, output, out
        self.fault_to_exit_s, self.survivors, self.injected_at_s = fault_to_exit_s, survivors, injected_at_s

    @property
    def report(self) -> dict:
        with open(os.path.join(self.out, "report.json")) as f:
            return json.load(f)


def inject(kind: str, how: str, seed: int, workdir: str, *, delay_s: tuple[float, float] = (0.3, 2.0),
           timeout_s: float = 180.0, real_spec: dict | None = None) -> Outcome:
    """Runs the fake deployment under `revati run` and, at a random point of its load (seeded: a
    delay in delay_s after the load started), kills (how="KILL") or stops ("STOP") the process of
    `kind`, or ("crash", "hang") the Timekeeper's loop. Returns what happened, with every
    descendant seen during the run that is still alive afterwards (survivors).
    real_spec: run this spec with the real vLLM instead (no fake)."""
    import psutil
    import yaml

    rng = random.Random(f"{kind}:{how}:{seed}")
    spec = json.loads(json.dumps(real_spec or SPEC))
    if kind == "sidecar":
        spec["spec"]["emulation"]["predictor"] = "sidecar"
    if kind == "router":  # two replicas behind revati's router, one GPU each
        spec["spec"].update(replicas=2, tensorParallelSize=1)
    os.makedirs(workdir, exist_ok=True)
    spec_path, out = os.path.join(workdir, "spec.yaml"), os.path.join(workdir, "out")
    with open(spec_path, "w") as f:
        yaml.safe_dump(spec, f)
    env = dict(os.environ)
    trigger = os.path.join(workdir, "tk-fault")
    if kind == "timekeeper":
        env["REVATI_FAKE_TK_FAULT"] = f"{how}:{trigger}"
    cmd = [sys.executable, "-m", "revati.cli"] if real_spec else [sys.executable, HERE, "revati"]
    proc = subprocess.Popen([*cmd, "run", spec_path, "--out", out], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, float] = {}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()

    def look() -> list[psutil.Process]:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        for c in kids:
            try:
                seen.setdefault(c.pid, c.create_time())
            except psutil.Error:
                pass
        return kids

    t_fault = None
    deadline = time.monotonic() + timeout_s
    bench_log = os.path.join(out, "bench.log")
    try:
        while proc.poll() is None and time.monotonic() < deadline:  # the load starts
            look()
            try:
                with open(bench_log) as f:
                    if "Starting main benchmark run" in f.read():
                        break
            except OSError:
                pass
            time.sleep(0.1)
        t_load = time.monotonic()
        wait = rng.uniform(*delay_s)
        while proc.poll() is None and time.monotonic() < t_load + wait:
            look()
            time.sleep(0.05)
        if proc.poll() is None:
            if kind == "timekeeper":
                open(trigger, "w").close()
                t_fault = time.monotonic()
            else:
                target = next((p for p in look() if _cmdline(p) and TARGETS[kind](_cmdline(p))), None)
                if target is not None:
                    target.send_signal(signal_of(how))
                    t_fault = time.monotonic()
        while proc.poll() is None and time.monotonic() < deadline:
            look()
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(5)
    t_exit = time.monotonic()
    time.sleep(0.5)  # (an orphan's SIGKILL takes effect)
    survivors = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                survivors.append(f"{pid} {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            pass
    for s in survivors:  # leave nothing behind, whatever the test says
        try:
            os.kill(int(s.split()[0]), 9)
        except OSError:
            pass
    return Outcome(proc.returncode, "".join(output), out, (t_exit - t_fault) if t_fault else None, survivors,
                   (t_fault - t_load) if t_fault else None)


def signal_of(how: str) -> int:
    import signal

    return {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}[how]


def _cmdline(p) -> list[str]:
    import psutil

    try:
        return p.cmdline()
    except psutil.Error:
        return []
