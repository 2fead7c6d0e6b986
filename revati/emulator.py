"""Launching processes under the emulator: the environment that makes a process tree see
virtual GPUs, and the merge of per-process trace parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from revati import envs
from revati.catalog import DEFAULT_GPU, get_gpu

if TYPE_CHECKING:
    from revati.timekeeper.timekeeper import Timekeeper

from revati.launch.paths import REPO_ROOT, SHIM_NAME, ShimNotBuiltError, shim_dir  # noqa: F401


def emulator_env(
    gpu: str = DEFAULT_GPU,
    *,
    num_gpus: int | None = None,
    predictor: str | None = None,
    trace: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    offline_hub: bool = True,
    sidecar: str | None = None,
    timewarp: "bool | Timekeeper | JoinedClock" = False,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """Returns the environment for a process tree that runs under the emulator.

    Args:
        gpu: catalog key of the virtual GPU.
        num_gpus: GPUs on the virtual node (default: the part's node size).
        predictor: duration source (roofline, constant:1ms, ...).
        trace: path of the merged Perfetto trace; processes write parts next to it.
        stats: prefix of per-process statistics files.
        offline_hub: serve the shipped model configs and tokenizers as an offline HF hub.
        sidecar: endpoint of a running prediction sidecar (see prediction_sidecar); when
            given and no other predictor is named, every op is predicted by the trained models.
        timewarp: put the tree on a causal virtual clock (REVATI_TIMEWARP=1): True starts
            this process's Timekeeper (shared_timekeeper) on first use; a Timekeeper is used
            as given. False (default) leaves every clock real.
        base: environment to start from (default: os.environ).
    """
    get_gpu(gpu)  # validates, with the list of choices in the error
    d = shim_dir()
    env = dict(os.environ if base is None else base)
    preload = str(d / SHIM_NAME)
    env["LD_PRELOAD"] = ":".join(p for p in [preload, env.get("LD_PRELOAD", "")] if p)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [str(d), env.get("LD_LIBRARY_PATH", "")] if p)
    env["TRITON_LIBCUDA_PATH"] = str(d)
    env["REVATI_ACTIVE"] = "1"
    env["REVATI_GPU"] = gpu
    if num_gpus is not None:
        env["REVATI_NUM_GPUS"] = str(num_gpus)
    if predictor:
        env["REVATI_PREDICTOR"] = predictor
    if sidecar:
        env["REVATI_SIDECAR"] = sidecar
        env["REVATI_ZMQ_LIB"] = zmq_library()
        env.setdefault("REVATI_PREDICTOR", "sidecar")
    if trace:
        env["REVATI_TRACE"] = str(Path(trace).resolve())
    if stats:
        env["REVATI_STATS_FILE"] = str(Path(stats).resolve())
    # vLLM's shared-memory broadcast queue: keep the yielding spin loop (see the facts note).
    env.setdefault("VLLM_USE_SPINLOOP_EXT", "0")
    # TP > 1: all-reduce through the shim's NCCL only. FlashInfer's and symmetric-memory
    # all-reduce use IPC buffers and device-side flags that nothing here emulates; vLLM's
    # custom all-reduce has no variable: pass --disable-custom-all-reduce.
    env.setdefault("VLLM_ALLREDUCE_USE_FLASHINFER", "0")
    # vLLM's pynccl opens libnccl.so.2 with ctypes and calls through that handle, which
    # would bypass the preloaded shim: point it at the shim's NCCL.
    env.setdefault("VLLM_NCCL_SO_PATH", preload)
    env.setdefault("VLLM_ALLREDUCE_USE_SYMM_MEM", "0")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    # FlashInfer's top-k/top-p sampler JIT-compiles CUDA sources at start-up (minutes, and it
    # needs cuRAND headers); kernels never run here, so vLLM's own sampler path is used. The
    # sampler is a small share of a step; the predictor accounts for its kernels by family.
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    if offline_hub:
        from revati import models

        env.update(models.prepare_offline_hub())
    if timewarp:
        env.update((shared_timekeeper() if timewarp is True else timewarp).env())
    return env


_timekeeper: "Timekeeper | JoinedClock | None" = None


class JoinedClock:
    """The clock of a Timekeeper that another process runs (one deployment, several trees)."""

    def __init__(self, path: str | os.PathLike, timekeeper_pid: int):
        self.page_path = Path(path)
        self.timekeeper_pid = timekeeper_pid

    def env(self) -> dict[str, str]:
        return {"REVATI_TIMEWARP": "1", "REVATI_CLOCK": str(self.page_path)}


def _live_clock_pid(path: Path) -> int | None:
    """The Timekeeper pid of a clock page whose Timekeeper is alive, else None."""
    from revati.timekeeper.clock_page import FLAG_ACTIVE, MAGIC, ClockPage

    try:
        page = ClockPage(path)
    except (OSError, ValueError):
        return None
    try:
        pid = page.get("timekeeper_pid")
        live = page.get("magic") == MAGIC and page.get("flags") & FLAG_ACTIVE
    finally:
        page.close()
    if not live:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def start_governor(timekeeper) -> "object | None":
    """Starts the contention governor on a Timekeeper's clock page (revati/timekeeper/governor.py)."""
    from revati.timekeeper.governor import ContentionGovernor

    actors = timekeeper._actors  # read-only from the governor's thread: a snapshot per sample

    def tasks():  # every emulated thread that announced itself, and each process's main thread
        live = [a for a in list(actors.values()) if a.pid]
        return {(a.pid, a.tid) for a in live if a.tid} | {(a.pid, a.pid) for a in live}

    return ContentionGovernor(timekeeper.page, tasks).start()


def shared_timekeeper(clock: str | os.PathLike | None = None, dilation: float = 1.0,
                      host_contention: str = "compensate") -> "Timekeeper | JoinedClock":
    """This process's Timekeeper, started on first use and stopped at exit.

    With clock (a clock page path), process trees started by different commands share one
    deployment clock: the first one starts the Timekeeper with its page at that path, the
    others join it while its Timekeeper lives (`revati exec --timewarp --clock PATH`).
    dilation: CPU work counts 1/dilation of its wall time (the owner's choice; joiners share it).
    host_contention: "compensate" runs the owner's clock under the contention governor.
    """
    global _timekeeper
    if _timekeeper is None:
        import atexit

        from revati.timekeeper.timekeeper import Timekeeper

        if clock is not None:
            path = Path(clock)
            pid = _live_clock_pid(path)
            if pid is not None:
                _timekeeper = JoinedClock(path, pid)
                return _timekeeper
            path.unlink(missing_ok=True)  # a stale page left by a Timekeeper that died
        _timekeeper = Timekeeper(page_path=clock, dilation=dilation).start()
        atexit.register(_timekeeper.stop)
        if host_contention == "compensate":
            atexit.register(start_governor(_timekeeper).stop)  # runs before the Timekeeper stops
    return _timekeeper


def merge_trace(path: str | os.PathLike) -> int:
    """Merges <path>.parts/*.jsonl into one Chrome trace at path. Returns the event count."""
    path = Path(path)
    parts = path.with_name(path.name + ".parts")
    events = []
    for f in sorted(parts.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a process killed mid-write leaves a truncated last line
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
    shutil.rmtree(parts, ignore_errors=True)
    return len(events)


def zmq_library() -> str:
    """The libzmq that pyzmq ships; the shim opens it to talk to the sidecar."""
    import zmq

    site = Path(zmq.__file__).resolve().parent.parent
    libs = sorted((site / "pyzmq.libs").glob("libzmq*.so*"))
    if not libs:
        raise RuntimeError(f"no libzmq found in {site / 'pyzmq.libs'}; the shim cannot reach the sidecar")
    return str(libs[0])


@contextmanager
def prediction_sidecar(gpu: str, workdir: str | os.PathLike | None = None,
                       startup_timeout_s: float = 120.0) -> Iterator[tuple[str, dict]]:
    """Runs the prediction sidecar for one process tree.

    Yields (endpoint, stats): stats is filled with the sidecar's counters (predictions,
    fallbacks by family) when the block exits.
    """
    from revati.sidecar import SidecarClient

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="revati-sidecar-"))
    tmp.mkdir(parents=True, exist_ok=True)
    sock = tmp / "sidecar.sock"
    # NOTE: a Unix socket path holds at most 107 bytes; a deep run folder (a pytest tmp_path)
    # would make the sidecar fail to bind. Then the socket lives in a short temporary folder.
    short = None
    if len(str(sock).encode()) > 100:
        short = Path(tempfile.mkdtemp(prefix="rv-sc-"))
        sock = short / "s.sock"
    endpoint = f"ipc://{sock}"
    log = open(tmp / "sidecar.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "revati.cli", "sidecar", "--endpoint", endpoint, "--gpu", gpu],
                            stdout=log, stderr=subprocess.STDOUT, process_group=0)
    stats: dict = {}
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the prediction sidecar exited ({proc.returncode}); see {tmp / 'sidecar.log'}")
            try:
                with SidecarClient(endpoint, timeout_s=2.0) as c:
                    c.hello(gpu)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the prediction sidecar did not answer in {startup_timeout_s:.0f} s")
                time.sleep(0.3)
        yield endpoint, stats
        try:
            with SidecarClient(endpoint, timeout_s=5.0) as c:
                stats.update(c.stats())
        except Exception:
            pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def summarize_stats(prefix: str | os.PathLike) -> dict:
    """Adds up the per-process statistics files <prefix>.<pid>.json of one run."""
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*.json"))
    total: dict = {"processes": 0, "ops": {}, "busy_ns": {}, "family_ns": {}, "predictor": {}}
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        total["processes"] += 1
        for key in ("steps", "graph_launches"):
            total[key] = total.get(key, 0) + d.get(key, 0)
        for key in ("ops", "busy_ns", "family_ns", "predictor"):
            for k, v in d.get(key, {}).items():
                total[key][k] = total[key].get(k, 0) + v
        total["duration_source"] = d.get("duration_source", "?")
    p = total["predictor"]
    lookups = p.get("hits", 0) + p.get("misses", 0)
    total["hit_rate"] = p.get("hits", 0) / lookups if lookups else None
    pred_ns = p.get("mapped_ns", 0) + p.get("unmapped_ns", 0)
    total["coverage"] = p.get("mapped_ns", 0) / pred_ns if pred_ns else None
    return total


def format_summary(total: dict, sidecar_stats: dict | None = None) -> str:
    """The end-of-run lines of `revati exec`: predicted GPU time by family, hit rate, fallbacks."""
    lines = [f"revati: {total['processes']} process(es) issued GPU work; duration source "
             f"{total.get('duration_source', '-')}"]
    busy = {k: v for k, v in total["busy_ns"].items() if v}
    fam = {k: v for k, v in total["family_ns"].items() if v}
    if busy:
        lines.append("revati: predicted GPU time by op kind: " +
                     ", ".join(f"{k} {v / 1e6:.1f} ms" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])))
    if fam:
        lines.append("revati: predicted kernel time by family: " +
                     ", ".join(f"{k} {v / 1e6:.1f} ms" for k, v in sorted(fam.items(), key=lambda kv: -kv[1])))
    if total.get("hit_rate") is not None:
        p = total["predictor"]
        lines.append(f"revati: shim prediction cache: {p.get('hits', 0)} hits, {p.get('misses', 0)} misses "
                     f"(hit rate {100 * total['hit_rate']:.2f}%); coverage {100 * total['coverage']:.1f}% of "
                     f"predicted GPU time from mapped families ({p.get('unmapped_ops', 0)} unmapped ops, "
                     "described by launch geometry)")
    if sidecar_stats:
        pred = sidecar_stats.get("predictor", sidecar_stats)
        lines.append(f"revati: predictor fallbacks {pred.get('fallbacks_total', 0)}: {pred.get('fallbacks', {})}")
    return "\n".join(lines)
