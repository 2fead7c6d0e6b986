"""A local `vllm serve` under the emulator, and `vllm bench serve` against it.

The building block of `revati demo` (and of the end-to-end `revati run`): start the real
OpenAI server as a process group, wait until it answers /health, drive it with the real
load generator, and tear the whole tree down on success, failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from revati.emulator import emulator_env, prediction_sidecar

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Children lead their own process group (process_group=0), not their own session: a new
# session is a new scheduler autogroup, and the host's CPU would be shared per session instead
# of per task, which the contention governor (revati/timekeeper/governor.py) assumes.


def _kill_tree(proc: subprocess.Popen, grace_s: float = 20.0, leader_only: bool = False) -> None:
    """SIGTERM, then after grace_s SIGKILL to the process group of proc.

    leader_only: the SIGTERM goes to the leader alone, which stops its own children: a running
    vllm serve terminates its engine core, which drains and exits. A second SIGTERM from us
    would reach the engine core after it restored the default handler and kill it mid-teardown
    (before its shim wrote its stats). During start-up the whole group gets it at once."""
    if proc.poll() is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphans of an exited leader
        except ProcessLookupError:
            pass
        return
    try:
        if leader_only:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class ServerFailed(RuntimeError):
    pass


@dataclass
class Server:
    url: str
    pid: int          # leader of the server's process group
    log_path: Path

    def tree_rss_bytes(self) -> dict[str, int]:
        """Resident memory of every process of the server, by "pid name"."""
        import psutil

        out = {}
        try:
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    out[f"{p.pid} {p.name()}"] = p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return out


@contextmanager
def vllm_server(
    model: str,
    *,
    gpu: str = "h100-sxm",
    serve_args: list[str] | None = None,
    port: int | None = None,
    log_path: Path,
    env_extra: dict[str, str] | None = None,
    predictor: str | None = None,
    trace: str | None = None,
    stats: str | None = None,
    startup_timeout_s: float = 1500.0,
    sidecar_stats: dict | None = None,
    timewarp=False,
) -> Iterator[Server]:
    """Runs `vllm serve MODEL --load-format dummy` under the emulator until it is healthy.

    Unless another predictor is named, a prediction sidecar serves the trained models for
    the server's process tree; its counters land in sidecar_stats when the server stops.
    timewarp goes to emulator_env: False, True, or a Timekeeper shared with the load generator.
    """
    if predictor in (None, "sidecar"):
        with prediction_sidecar(gpu, log_path.parent / "sidecar") as (endpoint, counters):
            with _vllm_server(model, gpu, serve_args, port, log_path, env_extra, predictor, trace, stats,
                              startup_timeout_s, endpoint, timewarp) as server:
                yield server
        if sidecar_stats is not None:
            sidecar_stats.update(counters)
    else:
        with _vllm_server(model, gpu, serve_args, port, log_path, env_extra, predictor, trace, stats,
                          startup_timeout_s, None, timewarp) as server:
            yield server


def vllm_serve_command(model: str, *, host: str, port: int, serve_args: list[str] | None = None) -> list[str]:
    """The `vllm serve` command line of an emulated server (`revati run`'s replicas and the
    Kubernetes replica pods' `revati role replica`): dummy weights, then the given flags."""
    return [str(VENV_BIN / "vllm"), "serve", model, "--load-format", "dummy", "--host", host,
            "--port", str(port), *(serve_args or [])]


@contextmanager
def _vllm_server(model, gpu, serve_args, port, log_path, env_extra, predictor, trace, stats,
                 startup_timeout_s, sidecar, timewarp=False) -> Iterator[Server]:
    port = port or free_port()
    env = emulator_env(gpu, predictor=predictor, trace=trace, stats=stats, sidecar=sidecar,
                       timewarp=timewarp)
    env.update(env_extra or {})
    cmd = vllm_serve_command(model, host="127.0.0.1", port=port, serve_args=serve_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    url = f"http://127.0.0.1:{port}"
    ready = False
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise ServerFailed(f"vllm serve exited with {proc.returncode} during start-up; "
                                   f"last lines of {log_path}:\n{tail(log_path)}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"vllm serve did not become healthy in {startup_timeout_s:.0f} s; "
                                   f"see {log_path}:\n{tail(log_path)}")
            time.sleep(1.0)
        ready = True
        yield Server(url, proc.pid, log_path)
    finally:
        # NOTE: during start-up there is nothing to drain and no stats worth waiting for, and
        # vLLM busy in torch.compile took the whole 20 s grace to act on SIGTERM (measured:
        # Ctrl-C 60 s into `revati run`'s start-up unwound in 20.0 s): 5 s, then SIGKILL.
        _kill_tree(proc, grace_s=20.0 if ready else 5.0, leader_only=ready)
        log.close()


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def completion(url: str, model: str, prompt: str, max_tokens: int, ignore_eos: bool = True) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "ignore_eos": ignore_eos, "temperature": 0.0}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def served_model(url: str) -> str:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return json.loads(r.read())["data"][0]["id"]


def bench_serve(
    url: str,
    model: str,
    tokenizer: str,
    *,
    gpu: str = "h100-sxm",
    num_prompts: int = 20,
    input_len: int = 128,
    output_len: int = 32,
    request_rate: str = "inf",
    result_dir: Path,
    log_path: Path,
    timeout_s: float = 1800.0,
) -> dict:
    """Runs the real `vllm bench serve` (random dataset) under the emulator; returns its result JSON."""
    env = emulator_env(gpu)
    result_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(VENV_BIN / "vllm"), "bench", "serve", "--backend", "vllm", "--base-url", url,
           "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
           "--random-input-len", str(input_len), "--random-output-len", str(output_len),
           "--num-prompts", str(num_prompts), "--request-rate", request_rate, "--ignore-eos",
           "--save-result", "--result-dir", str(result_dir), "--result-filename", "bench.json"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        try:
            rc = proc.wait(timeout=timeout_s)
        finally:
            _kill_tree(proc)
    if rc != 0:
        raise RuntimeError(f"vllm bench serve failed ({rc}); see {log_path}:\n{tail(log_path)}")
    return json.loads((result_dir / "bench.json").read_text())
