"""Benchmark: vLLM tensor-parallel 2 under the time warp, decode-phase virtual seconds per wall second.

Serves Llama-3.1-8B (dummy weights) with `--tensor-parallel-size 2 --disable-custom-all-reduce`
under `revati exec --clock ... --predictor constant:1ms`, runs `vllm bench serve` on the same
clock, samples (wall, virtual) pairs from the clock page while it runs, and reports:
- TPOT (virtual, from the bench result);
- the decode phase's virtual seconds per wall second: from the first to the last decode-only
  step in the step log (virtual), mapped to wall time through the samples;
- the bench command's whole virtual/wall ratio (client start-up included).

Reproduce with:
    .venv/bin/python benchmarks/timewarp_tp2.py [--prompts 8] [--output-len 64] [--trace PATH]
(REVATI_SHIM_DIR picks another shim build, e.g. a copy of an older one, for a before/after.)
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from revati.engines.base import VENV_BIN
from revati.launch.processes import free_port
from revati.timekeeper.clock_page import ClockPage, real_ns_now

MODEL = "meta-llama/Llama-3.1-8B"


def _exec(clock: str, predictor: str, *cmd: str, trace: str | None = None) -> list[str]:
    return [sys.executable, "-m", "revati.cli", "exec", "--clock", clock, "--predictor", predictor,
            *(["--trace", trace] if trace else []), "--", *cmd]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--predictor", default="constant:1ms")
    ap.add_argument("--trace", default=None, help="write the merged Perfetto trace here")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--serve-args", default="", help="more `vllm serve` arguments (one string)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="revati-tp2-"))
    work.mkdir(parents=True, exist_ok=True)
    clock = f"/dev/shm/revati-tp2-bench-{os.getpid()}"
    port = free_port()
    steps = work / "steps.jsonl"
    log = open(work / "server.log", "w")
    print(f"command: {' '.join([sys.executable, *sys.argv])}   (host: {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}, shim dir {os.environ.get('REVATI_SHIM_DIR', 'default')})")
    server = subprocess.Popen(
        _exec(clock, args.predictor, "env", f"REVATI_STEP_LOG={steps}", str(VENV_BIN / "vllm"), "serve", MODEL,
              "--load-format", "dummy", "--port", str(port), "--max-model-len", "2048",
              "--tensor-parallel-size", "2", "--disable-custom-all-reduce", *shlex.split(args.serve_args),
              trace=args.trace),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        t_start = time.monotonic()
        while True:
            if server.poll() is not None:
                print((work / "server.log").read_text()[-4000:])
                return 1
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t_start > 1500:
                print("vllm serve did not come up")
                return 1
            time.sleep(1)
        print(f"server up after {time.monotonic() - t_start:.0f} wall s")
        page = ClockPage(clock)

        def sample() -> None:
            while not stop.is_set():
                samples.append((real_ns_now() / 1e9, page.now_ns() / 1e9))
                time.sleep(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        w0, v0 = time.monotonic(), page.now_ns() / 1e9
        bench = subprocess.run(
            _exec(clock, args.predictor, str(VENV_BIN / "vllm"), "bench", "serve", "--backend", "vllm",
                  "--base-url", f"http://127.0.0.1:{port}", "--model", MODEL, "--dataset-name", "random",
                  "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
                  "--num-prompts", str(args.prompts), "--request-rate", "inf", "--ignore-eos", "--save-result",
                  "--result-dir", str(work), "--result-filename", "bench.json"),
            capture_output=True, text=True, timeout=1800, cwd=REPO)
        w1, v1 = time.monotonic(), page.now_ns() / 1e9
        stop.set()
        th.join()
        if bench.returncode != 0:
            print(bench.stdout[-3000:], bench.stderr[-3000:])
            return 1
    finally:
        stop.set()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    result = json.loads((work / "bench.json").read_text())
    step_list = [json.loads(ln) for ln in steps.read_text().splitlines() if ln.strip()]
    by_pid: dict[int, list[dict]] = {}
    for s in step_list:
        by_pid.setdefault(s.get("pid", 0), []).append(s)
    # One worker's steps (each rank logs its own); decode-only steps inside the bench window.
    mine = max(by_pid.values(), key=len)
    dec = [s["t"] for s in mine if s.get("num_prefill") == 0 and s.get("num_decode", 0) > 0 and v0 <= s["t"] <= v1]
    walls, virts = [w for w, _ in samples], [v for _, v in samples]

    def wall_at(v: float) -> float:
        i = min(max(bisect.bisect_left(virts, v), 1), len(virts) - 1)
        (wa, va), (wb, vb) = samples[i - 1], samples[i]
        return wa if vb == va else wa + (v - va) * (wb - wa) / (vb - va)

    print(f"TPOT mean {result['mean_tpot_ms']:.1f} ms (median {result['median_tpot_ms']:.1f}), "
          f"{args.prompts} prompts x {args.output_len} tokens")
    if len(dec) >= 2 and len(samples) >= 2:
        dv = dec[-1] - dec[0]
        dw = wall_at(dec[-1]) - wall_at(dec[0])
        print(f"decode phase: {dv:.2f} virtual s in {dw:.2f} wall s: {dv / dw:.2f} virtual s per wall s "
              f"({len(dec)} decode steps, {1e3 * dw / max(1, len(dec) - 1):.1f} wall ms per step)")
    print(f"bench command: {v1 - v0:.2f} virtual s in {w1 - w0:.2f} wall s ({(v1 - v0) / (w1 - w0):.2f} virtual s "
          f"per wall s, client start-up included); bench duration {result['duration']:.2f} virtual s")
    summary = [ln for ln in (work / "server.log").read_text().splitlines() if ln.startswith("revati: time warp: ")]
    if summary:
        print(f"server's clock (whole run): {summary[-1][len('revati: time warp: '):]}")
    print(f"work dir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
