#!/usr/bin/env python3
"""The wall-time ledger of one `revati run` (issue 17): where every CPU and wall second goes.

Runs `revati run SPEC --out DIR` under a /proc sampler (revati/run/ledger.py: every thread's
schedstat every --interval seconds) and, with --perf, under `perf record` (the samples in the
shim's library inside the engine's processes are the shim's own CPU). Prints, per process
role and thread group, the CPU seconds of the start-up, the load and the rest; the run-queue
wait; the wall time when no thread of the run was on a core; the start-up phases (from
report.json); and the emulator's own CPU over the control plane's. Writes DIR/ledger.json,
which `revati explain DIR` shows.

    .venv/bin/python benchmarks/speed.py examples/default.yaml --out runs/speed [--perf]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from revati import engines  # noqa: E402
from revati.run import ledger  # noqa: E402

PERF_HZ = 99


def perf_by_pid(data: Path) -> dict[int, dict[str, int]]:
    """Samples per process (pid) and shared object from a perf.data file."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    p = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,ip,dso"], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            out[int(parts[0])][parts[-1].strip("()").rsplit("/", 1)[-1]] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default="examples/default.yaml")
    ap.add_argument("--out", default="runs/speed")
    ap.add_argument("--interval", type=float, default=0.25, help="sampling period, s (default 0.25)")
    ap.add_argument("--perf", action="store_true", help="also profile with perf record (the shim's share)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(ROOT / ".venv/bin/revati"), "run", a.spec, "--out", str(out)]
    if a.perf:
        if not shutil.which("perf"):
            print("speed.py: --perf: no perf on this host", file=sys.stderr)
            return 2
        cmd = ["perf", "record", "-q", "-F", str(PERF_HZ), "-o", str(out / "perf.data"), "--", *cmd]
    command = "benchmarks/speed.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    print(f"command: {command}\nhost: {os.cpu_count()} cores, load average {' '.join(load0)}", flush=True)
    # NOTE: the run kills its process groups at the end; their orphans (vLLM's engine core) would
    # be reaped by init and missing from our rusage. As a subreaper this process reaps them.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    t0 = time.monotonic()
    with open(out / "speed.run.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = ledger.TreeSampler(proc.pid, a.interval).start()
        _, status, _ = os.wait4(proc.pid, 0)
    t1 = time.monotonic()
    sampler.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the orphans, until none is left
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.2)
        except ChildProcessError:
            break
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    report_path = out / "report.json"
    if not report_path.exists() or report_path.stat().st_mtime < time.time() - (t1 - t0):
        print(f"revati run failed ({rc}) without a report; see {out / 'speed.run.log'}")
        return 1
    rep = json.loads(report_path.read_text())
    if rc != 0:  # 1: a request failed (or the run's outcome is failed); the ledger holds all the same
        print(f"note: revati run exited {rc}: {rep.get('completed')} completed, {rep.get('failed')} failed, "
              f"outcome {rep.get('outcome', '-')}")
    e = rep["emulation"]
    st = e.get("startup") or {}
    windows = {"run": (t0, t1)}
    spells = st.get("spells") or []
    if st.get("t0_monotonic") and spells:
        base = st["t0_monotonic"]
        load = [s for s in spells if s["phase"] == "load"]
        start_end = base + (load[0]["start_s"] if load else spells[-1]["end_s"])
        windows = {"start-up": (t0, start_end)}
        if load:
            windows["load"] = (base + load[0]["start_s"], base + load[0]["end_s"])
            windows["teardown"] = (base + load[0]["end_s"], t1)
        windows["run"] = (t0, t1)
    engine = engines.get()  # the process titles of the default engine (vLLM)
    perf = perf_by_pid(out / "perf.data") if a.perf else None
    d = ledger.ledger(sampler, windows, engine=engine, perf_samples=perf, perf_hz=PERF_HZ if a.perf else None,
                      rusage_cpu_s=ru.ru_utime + ru.ru_stime, command=command,
                      loadavg=[" ".join(load0), " ".join(load1)])
    d["startup_phases_s"] = st.get("phases_s")
    d["startup_wall_s"] = st.get("startup_wall_s")
    d["report"] = {k: rep.get(k) for k in ("median_ttft_ms", "median_tpot_ms", "p99_ttft_ms", "p99_tpot_ms")}
    d["report"].update({k: e.get(k) for k in ("virtual_s", "wall_s", "speedup", "jumps")})
    d["report"]["contention_mean_factor"] = (e.get("contention_factor") or {}).get("mean_factor")
    (out / ledger.LEDGER_FILE).write_text(json.dumps(d, indent=1))
    print(ledger.format_ledger(d))
    if st.get("phases_s"):
        print("start-up phases (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in st["phases_s"].items())
              + f"; start-up {st.get('startup_wall_s')} s")
    r = d["report"]
    print(f"TTFT p50 {r['median_ttft_ms']:.2f} ms, TPOT p50 {r['median_tpot_ms']:.3f} ms; virtual {r['virtual_s']:.1f} s "
          f"in {r['wall_s']:.1f} wall s of load = {r['speedup']:.2f}x; clock slowed {r['contention_mean_factor']}x "
          f"for host contention; whole command {t1 - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
