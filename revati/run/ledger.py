"""The wall-time ledger of one `revati run`: where every CPU second (and idle second) went.

A sampler (`TreeSampler`) follows the process tree of a run from outside, through /proc: every
``interval_s`` it reads each thread's schedstat (run time and run-queue wait, exact ns) and, for
new threads, their name (comm), and each process's command line (its role). Per-thread series
are kept only where they moved, so the CPU of any window (a start-up phase, the load) is exact
up to one interval at each end. Threads and processes that exit between two samples lose at
most one interval of CPU; the whole tree's CPU as the kernel counts it (the run's rusage)
is the check (`ledger()` prints both).

Groups (`classify`): the control plane (the engine's API server, engine core and workers by
role, their compiler children, the router, the load generator), the emulator's own work (the
Timekeeper, the contention governor and the rest of the `revati run` process, the prediction
sidecar, a relay, the shim's threads inside the engine's processes, and, when a perf profile of
the run is given, the samples in the shim's library inside them), and the ledger's own tools.

`name_os_threads` gives this process's Python threads their names as OS thread names, so the
sampler (and top -H) can tell the Timekeeper from the governor.

`benchmarks/speed.py` runs a spec under the sampler and writes ``ledger.json`` into the run's
folder; `revati explain RUN_DIR` shows it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from revati.launch.processes import descendants

LEDGER_FILE = "ledger.json"
#: Names of the emulator's own threads in the `revati run` process (OS names: 15 bytes).
RUNNER_THREADS = {"revati-timekeep": "Timekeeper", "revati-governor": "contention governor",
                  "revati-startup": "start-up display", "revati-relay": "relay"}
#: Threads the shim starts inside an emulated process.
SHIM_THREADS = ("revati-condwake",)
#: Children of the engine's processes that compile (torch.compile's workers, Triton's toolchain).
COMPILER_PROGRAMS = {"ptxas", "cc1", "cc1plus", "gcc", "g++", "cc", "ld", "as", "collect2", "nvcc", "nvlink"}


def name_os_threads() -> None:
    """Gives every live Python thread of this process its name as the OS thread name (comm)."""
    for t in threading.enumerate():
        tid = getattr(t, "native_id", None)
        if not tid or t is threading.main_thread():
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm", "w") as f:
                f.write(t.name[:15])
        except OSError:
            pass


# ------------------------------------------------------------------------------- sampling

@dataclass
class _Thread:
    pid: int
    tid: int
    comm: str
    fd: int | None
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (t, run ns, wait ns) when moved

    def at(self, t: float) -> tuple[int, int]:
        """(run, wait) ns at the last sample at or before t (0 before the first)."""
        last = (0, 0)
        for ts, run, wait in self.series:
            if ts > t:
                break
            last = (run, wait)
        return last


@dataclass
class _Process:
    pid: int
    ppid: int
    cmdline: str
    first_t: float
    last_t: float
    read_cmd_t: float
    ticks: list[tuple[float, int, int]] = field(default_factory=list)  # (t, user, system) clock ticks

    def at(self, t: float) -> tuple[int, int]:
        last = (0, 0)
        for ts, u, k in self.ticks:
            if ts > t:
                break
            last = (u, k)
        return last


class TreeSampler:
    """Samples the threads of root_pid's process tree every interval_s, from a thread of its own."""

    def __init__(self, root_pid: int, interval_s: float = 0.2):
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.threads: dict[int, _Thread] = {}
        self.procs: dict[int, _Process] = {}
        self.busy: list[tuple[float, float, int]] = []  # (t0, t1, run ns of the tree in between)
        self.host: list[tuple[float, int, int]] = []    # (t, busy jiffies, all jiffies) of /proc/stat
        self.samples = 0
        self.own_cpu_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TreeSampler":
        self._thread = threading.Thread(target=self._loop, name="ledger-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for th in self.threads.values():
            if th.fd is not None:
                os.close(th.fd)
                th.fd = None

    def _loop(self) -> None:
        c0 = time.thread_time()
        prev_t, prev_total = time.monotonic(), 0
        while not self._stop.is_set():
            total = self.sample_once()
            now = time.monotonic()
            self.busy.append((prev_t, now, total - prev_total))
            prev_t, prev_total = now, total
            self._stop.wait(self.interval_s)
        self.own_cpu_s = time.thread_time() - c0

    def sample_once(self) -> int:
        """One sample of every thread of the tree; returns the tree's run ns so far (live and gone)."""
        now = time.monotonic()
        self.samples += 1
        for pid in self._tree():
            p = self.procs.get(pid)
            if p is None:
                p = self.procs[pid] = _Process(pid, _ppid(pid), _cmdline(pid), now, now, now)
            elif now - p.read_cmd_t > 2.0:  # titles change after start (setproctitle)
                p.cmdline, p.read_cmd_t = _cmdline(pid) or p.cmdline, now
            p.last_t = now
            ut = _user_system(pid)
            if ut is not None and (not p.ticks or p.ticks[-1][1:] != ut):
                p.ticks.append((now, *ut))
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                th = self.threads.get(tid)
                if th is None or th.pid != pid:
                    try:
                        fd = os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY)
                    except OSError:
                        continue
                    th = self.threads[tid] = _Thread(pid, tid, _comm(pid, tid), fd)
                elif len(th.series) < 3 or self.samples % 10 == 0:
                    th.comm = _comm(pid, tid) or th.comm  # threads name themselves after start
                if th.fd is None:
                    continue
                try:
                    run, wait = (int(x) for x in os.pread(th.fd, 128, 0).split()[:2])
                except (OSError, ValueError):  # gone (ESRCH): it keeps its last sample
                    os.close(th.fd)
                    th.fd = None
                    continue
                if not th.series or th.series[-1][1] != run or th.series[-1][2] != wait:
                    th.series.append((now, run, wait))
        self.host.append((now, *_host_jiffies()))
        return sum(th.series[-1][1] for th in self.threads.values() if th.series)

    def _tree(self) -> list[int]:
        return [self.root_pid, *descendants(self.root_pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def _user_system(pid: int) -> tuple[int, int] | None:
    """The process's user and system CPU (clock ticks, its live and exited threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        f = stat[stat.rindex(")") + 2:].split()
        return int(f[11]), int(f[12])
    except (OSError, ValueError, IndexError):
        return None


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return 0


def _host_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


# --------------------------------------------------------------------------- classifying

def process_role(cmdline: str, root: bool, engine=None) -> tuple[str, str]:
    """(side, role) of a process of the run from its command line (or title): side is
    "control plane", "emulator" or "ledger"."""
    title = cmdline.split(" ")[0] if cmdline else ""
    if root and (title.endswith("perf") or " perf " in f" {cmdline} "):
        return "ledger", "perf (the ledger's profiler)"
    if engine is not None:
        kind = engine.process_kind(title)
        if kind == "api":
            return "control plane", "API server"
        if kind == "engine":
            return "control plane", "engine core"
        if kind == "worker":
            return "control plane", "workers"
    if re.search(r"revati(\.cli)? sidecar", cmdline):
        return "emulator", "relay" if "--relay" in cmdline else "prediction sidecar"
    if "revati.run.router" in cmdline:
        return "control plane", "router"
    if re.search(r"\bvllm bench\b|bench serve", cmdline):
        return "control plane", "load generator"
    if re.search(r"\bvllm serve\b", cmdline):
        return "control plane", "API server"
    if re.search(r"revati (run|demo)\b", cmdline):
        return "emulator", "revati run"
    if title.rsplit("/", 1)[-1] in COMPILER_PROGRAMS or "compile_worker" in cmdline:
        return "control plane", "compilers"
    if "multiprocessing.spawn" in cmdline or "resource_tracker" in cmdline:
        return "control plane", "engine processes (spawning)"
    return "other", title.rsplit("/", 1)[-1] or "?"


def thread_group(side: str, role: str, comm: str, is_main: bool) -> tuple[str, str]:
    """(side, group) of one thread of a process of (side, role)."""
    if role == "revati run":
        return "emulator", RUNNER_THREADS.get(comm, "revati run: main thread and others")
    if side == "control plane" and comm.startswith(SHIM_THREADS):
        return "emulator", "shim threads (condwake)"
    return side, role


# ------------------------------------------------------------------------------ the ledger

def ledger(sampler: TreeSampler, windows: dict[str, tuple[float, float]], *, engine=None,
           perf_samples: dict[int, dict[str, int]] | None = None, perf_hz: int | None = None,
           rusage_cpu_s: float | None = None, command: str = "", loadavg: list[str] | None = None) -> dict:
    """The ledger's JSON: CPU seconds per (side, group) in each window (name -> monotonic start,
    end), the run-queue wait, the wall seconds when no thread of the run ran, and the ratio of the
    emulator's own CPU to the control plane's.

    Args:
        perf_samples: per pid, samples by shared object (a perf profile of the same run).
        rusage_cpu_s: the tree's user+system CPU as the kernel counted it, for the check.
    """
    roles: dict[int, tuple[str, str]] = {}
    for pid, p in sampler.procs.items():
        roles[pid] = process_role(p.cmdline, pid == sampler.root_pid, engine)
        # a compiler or spawn helper under the engine is the engine's
        if roles[pid][0] == "other" and p.ppid in roles:
            roles[pid] = roles[p.ppid]
    # NOTE: vLLM's engine core starts as a multiprocessing child and gets its title later: a
    # process whose title was seen once keeps it (the last command line read)
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    names: dict[tuple[str, str], dict[str, dict[str, float]]] = {}  # group -> thread name -> window -> CPU s
    for th in sampler.threads.values():
        side, role = roles.get(th.pid, ("other", "?"))
        key = thread_group(side, role, th.comm, th.tid == th.pid)
        g = groups.setdefault(key, {})
        tn = ("main thread" if th.tid == th.pid else re.sub(r"[-_/]?\d+$", "", th.comm) or "?")
        n = names.setdefault(key, {}).setdefault(tn, {})
        for name, (a, b) in windows.items():
            ra, wa = th.at(a)
            rb, wb = th.at(b)
            cell = g.setdefault(name, [0.0, 0.0])
            cell[0] += (rb - ra) / 1e9
            cell[1] += (wb - wa) / 1e9
            n[name] = n.get(name, 0.0) + (rb - ra) / 1e9
    hz = os.sysconf("SC_CLK_TCK")
    user_sys: dict[str, dict[str, list[float]]] = {}  # role -> window -> [user s, system s]
    for pid, p in sampler.procs.items():
        side, role = roles.get(pid, ("other", "?"))
        for name, (a, b) in windows.items():
            ua, ka = p.at(a)
            ub, kb = p.at(b)
            cell = user_sys.setdefault(role, {}).setdefault(name, [0.0, 0.0])
            cell[0] += (ub - ua) / hz
            cell[1] += (kb - ka) / hz
    shim: dict[str, float] = {}
    if perf_samples and perf_hz:
        for pid, by_dso in perf_samples.items():
            side, role = roles.get(pid, ("other", "?"))
            n = sum(v for k, v in by_dso.items() if "librevati_shim" in k or "librevati_tk" in k)
            if n and side == "control plane":
                shim[role] = shim.get(role, 0.0) + n / perf_hz
    rows = []
    for (side, group), cells in sorted(groups.items(), key=lambda kv: (kv[0][0], -sum(c[0] for c in kv[1].values()))):
        top = sorted(names.get((side, group), {}).items(), key=lambda kv: -max(kv[1].values(), default=0))
        rows.append({"side": side, "group": group, "cpu_s": {k: round(v[0], 2) for k, v in cells.items()},
                     "queued_s": {k: round(v[1], 2) for k, v in cells.items()},
                     "threads_cpu_s": {tn: {k: round(v, 2) for k, v in w.items()} for tn, w in top[:6]}})
    totals = {}
    for name in windows:
        cp = sum(r["cpu_s"].get(name, 0.0) for r in rows if r["side"] == "control plane")
        em = sum(r["cpu_s"].get(name, 0.0) for r in rows if r["side"] == "emulator")
        totals[name] = {"control_plane_cpu_s": round(cp, 2), "emulator_cpu_s": round(em, 2)}
    out = {
        "command": command,
        "interval_s": sampler.interval_s,
        "samples": sampler.samples,
        "loadavg": loadavg,
        "windows": {k: [round(a - sampler.busy[0][0], 2) if sampler.busy else a,
                        round(b - sampler.busy[0][0], 2) if sampler.busy else b] for k, (a, b) in windows.items()},
        "rows": rows,
        "user_system_s": {role: {k: [round(u, 2), round(k_, 2)] for k, (u, k_) in w.items()}
                          for role, w in user_sys.items()},
        "totals": totals,
        "idle_wall_s": {k: round(_idle(sampler, a, b), 2) for k, (a, b) in windows.items()},
        "host_busy_cores": {k: _host_busy(sampler, a, b) for k, (a, b) in windows.items()},
        "sampled_cpu_s": round(sum(th.series[-1][1] for th in sampler.threads.values() if th.series) / 1e9, 2),
        "rusage_cpu_s": round(rusage_cpu_s, 2) if rusage_cpu_s is not None else None,
        "sampler_cpu_s": round(sampler.own_cpu_s, 2),
    }
    if shim:
        # the shim's library samples, moved from the control plane's processes to the emulator
        out["shim_sampled_cpu_s"] = {k: round(v, 2) for k, v in shim.items()}
        out["shim_how"] = f"perf samples at {perf_hz} Hz in librevati_shim.so over the whole run (self time)"
    for name, t in totals.items():
        s = sum(shim.values()) if name == "run" else None
        cp, em = t["control_plane_cpu_s"], t["emulator_cpu_s"]
        if s is not None:
            cp, em = cp - s, em + s
        t["emulator_over_control_plane"] = round(em / cp, 3) if cp else None
    return out


def _idle(sampler: TreeSampler, a: float, b: float) -> float:
    """Wall seconds within [a, b] when the run's threads together used under 2% of a core."""
    idle = 0.0
    for t0, t1, run in sampler.busy:
        lo, hi = max(t0, a), min(t1, b)
        if hi > lo and t1 > t0 and run / 1e9 < 0.02 * (t1 - t0):
            idle += hi - lo
    return idle


def _host_busy(sampler: TreeSampler, a: float, b: float) -> float | None:
    """Mean busy cores of the whole host within [a, b] (this run and everything else)."""
    pts = [(t, busy, tot) for t, busy, tot in sampler.host if a <= t <= b]
    if len(pts) < 2 or pts[-1][2] == pts[0][2]:
        return None
    cores = os.cpu_count() or 1
    return round((pts[-1][1] - pts[0][1]) / (pts[-1][2] - pts[0][2]) * cores, 2)


def format_ledger(d: dict) -> str:
    """The ledger as text: one row per group, a column per window."""
    names = list(d["windows"])
    w = max([len(r["group"]) for r in d["rows"]] + [20])
    lines = [f"{'CPU seconds':<{w + 16}}" + "".join(f"{n:>12}" for n in names)
             + f"{'queued (' + names[-1] + ')':>18}"]
    side = None
    for r in d["rows"]:
        if r["side"] != side:
            side = r["side"]
            lines.append(f"[{side}]")
        lines.append(f"  {r['group']:<{w + 14}}" + "".join(f"{r['cpu_s'].get(n, 0):>12.1f}" for n in names)
                     + f"{r['queued_s'].get(names[-1], 0):>18.1f}")
        threads = r.get("threads_cpu_s") or {}
        if len(threads) > 1 and r["cpu_s"].get(names[-1], 0) >= 1.0:
            for tn, cells in list(threads.items())[:4]:
                lines.append(f"      {tn:<{w + 10}}" + "".join(f"{cells.get(n, 0):>12.1f}" for n in names))
    us = d.get("user_system_s") or {}
    win = "load" if "load" in names else names[-1]
    if us:
        lines.append(f"user / system CPU s ({win}, /proc/PID/stat): " + ", ".join(
            f"{role} {w[win][0]:.1f} / {w[win][1]:.1f}" for role, w in sorted(us.items(), key=lambda kv: -sum(
                kv[1].get(win, [0, 0]))) if win in w and sum(w[win]) >= 0.1))
    for k, v in (d.get("shim_sampled_cpu_s") or {}).items():
        lines.append(f"  shim library inside the {k} (perf, whole run): {v:.1f} s")
    for n in names:
        t = d["totals"][n]
        lines.append(f"{n}: control plane {t['control_plane_cpu_s']:.1f} CPU s, emulator {t['emulator_cpu_s']:.1f} CPU s"
                     + (f" = {100 * t['emulator_over_control_plane']:.0f}% of the control plane"
                        if t.get("emulator_over_control_plane") is not None else "")
                     + f"; wall with no thread of the run on a core {d['idle_wall_s'][n]:.1f} s"
                     + (f"; host busy {d['host_busy_cores'][n]:.2f} cores on average"
                        if d["host_busy_cores"].get(n) is not None else ""))
    lines.append(f"sampled {d['sampled_cpu_s']:.1f} CPU s in all"
                 + (f" of {d['rusage_cpu_s']:.1f} s that the kernel counted for the tree (rusage)"
                    if d.get("rusage_cpu_s") is not None else "")
                 + f"; {d['samples']} samples every {d['interval_s']} s; the sampler used {d['sampler_cpu_s']:.1f} s")
    if d.get("loadavg"):
        lines.append("load average at start / end: " + " / ".join(d["loadavg"]))
    if d.get("command"):
        lines.append("reproduce: " + d["command"])
    return "\n".join(lines)


def load(run_dir: str | os.PathLike) -> dict | None:
    p = Path(run_dir) / LEDGER_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
