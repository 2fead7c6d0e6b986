"""`revati role replica|router|loadgen`: the Kubernetes pods' commands (issue 6), without vLLM.

The replica's `vllm serve` command line is the one `revati run` launches (captured from
orchestrator.run with the process start stubbed out), the router proxies to real local HTTP
servers, and the loadgen's report is built from a hand-made `vllm bench serve` result.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from revati.cli import main
from revati.launch.paths import SHIM_NAME, shim_dir
from revati.run import loadgen, orchestrator, roles
from revati.run.plan import serve_plan
from revati.launch.processes import free_port
from revati.spec import load_spec

MODEL = "meta-llama/Llama-3.1-8B"


def _spec(tmp_path: Path, name: str = "roles", **spec) -> Path:
    doc = {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment", "metadata": {"name": name},
           "spec": {"model": MODEL, "gpu": "h100-sxm",
                    "workload": {"dataset": {"type": "random", "inputLen": 100, "outputLen": 4},
                                 "arrival": {"process": "poisson", "requestRate": 4}, "numPrompts": 3},
                    **spec}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _pod_env(tmp_path: Path, timewarp: bool) -> dict[str, str]:
    """What the operator's pod sets (CONTRACT.md), with paths under tmp_path."""
    env = {"LD_PRELOAD": str(shim_dir() / SHIM_NAME), "REVATI_SHIM_DIR": str(shim_dir()), "REVATI_ACTIVE": "1",
           "REVATI_GPU": "h100-sxm", "REVATI_SIDECAR": f"ipc://{tmp_path}/sidecar.sock",
           "REVATI_NODE_NAME": "roles-replica-1"}
    if timewarp:
        env.update(REVATI_TIMEWARP="1", REVATI_CLOCK=str(tmp_path / "clock"))
    return env


# ---------------------------------------------------------------------------- arguments


def test_missing_spec_is_a_clear_error(tmp_path, capsys):
    assert main(["role", "replica", "--spec", str(tmp_path / "nope.yaml"), "--replica", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["role", "loadgen", "--spec", str(tmp_path / "nope.yaml"), "--target", "http://x:8000"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_replica_index_must_be_below_replicas(tmp_path, capsys):
    p = _spec(tmp_path, replicas=2)
    for bad in ("2", "-1"):
        assert main(["role", "replica", "--spec", str(p), "--replica", bad]) == 2
        err = capsys.readouterr().err
        assert f"--replica {bad} is out of range: spec.replicas is 2" in err
    with pytest.raises(SystemExit):  # argparse: --replica is required
        main(["role", "replica", "--spec", str(p)])


def test_router_backends_are_checked(capsys):
    assert main(["role", "router", "--port", "1", "--backends", ","]) == 2
    assert "at least one URL" in capsys.readouterr().err
    assert main(["role", "router", "--port", "1", "--backends", "http://a:8000,b:8000"]) == 2
    assert "'b:8000' is not an http(s):// URL" in capsys.readouterr().err
    assert roles.parse_backends(" http://a:8000 ,http://b:8000/") == ["http://a:8000", "http://b:8000/"]


def test_timewarp_of_the_pod_must_match_the_spec(tmp_path, monkeypatch, capsys):
    p = _spec(tmp_path)  # emulation.timewarp defaults to true
    for k in ("REVATI_TIMEWARP", "REVATI_CLOCK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("REVATI_SIDECAR", f"ipc://{tmp_path}/sidecar.sock")
    assert main(["role", "replica", "--spec", str(p), "--replica", "0"]) == 2
    assert "spec.emulation.timewarp is true but the pod does not set REVATI_TIMEWARP=1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- replica


class _Launched(Exception):
    def __init__(self, cmd, env):
        self.cmd, self.env = cmd, env


def _what_revati_run_launches(monkeypatch, spec, out: Path) -> _Launched:
    """orchestrator.run up to its first `vllm serve` start (stubbed: nothing starts)."""
    from revati.launch import processes

    @contextmanager
    def fake_sidecar(gpu, workdir=None, startup_timeout_s=120.0, on_start=None):
        yield "ipc:///run/revati/sidecar.sock", {}

    class FakeSubprocess:
        STDOUT = subprocess.STDOUT

        @staticmethod
        def Popen(cmd, env=None, **kw):
            raise _Launched(cmd, env)

    monkeypatch.setattr(orchestrator, "prediction_sidecar", fake_sidecar)
    monkeypatch.setattr(processes, "subprocess", FakeSubprocess)
    with pytest.raises(_Launched) as e:
        orchestrator.run(spec, out)
    return e.value


@pytest.mark.parametrize("topology", [
    {"tensorParallelSize": 2, "engine": {"args": {"max-num-seqs": 8, "enforce-eager": True, "max-model-len": 2048}}},
    {"pipelineParallelSize": 2, "replicas": 2, "engine": {"args": {"shutdown-timeout": 3}}},
])
def test_replica_command_is_the_one_revati_run_launches(tmp_path, monkeypatch, topology):
    p = _spec(tmp_path, emulation={"timewarp": False}, **topology)
    spec = load_spec(p)
    launched = _what_revati_run_launches(monkeypatch, spec, tmp_path / "run")
    port = int(launched.cmd[launched.cmd.index("--port") + 1])
    assert roles.replica_command(spec, 0, port=port, host="127.0.0.1") == launched.cmd
    pod = roles.replica_command(spec, 0)  # what the pod execs: all interfaces, port 8000
    assert pod[pod.index("--host") + 1] == "0.0.0.0" and pod[pod.index("--port") + 1] == "8000"
    assert [a for a in pod if a not in ("0.0.0.0", "8000")] == \
        [a for a in launched.cmd if a not in ("127.0.0.1", str(port))]
    assert pod[1:5] == ["serve", MODEL, "--load-format", "dummy"]
    sp = serve_plan(spec.spec)
    assert pod[-len(sp.serve_args):] == sp.serve_args
    if spec.spec.tensorParallelSize > 1:
        assert "--disable-custom-all-reduce" in pod and pod[pod.index("--shutdown-timeout") + 1] == "10"
        assert "--enforce-eager" in pod and pod[pod.index("--tensor-parallel-size") + 1] == "2"
    else:
        assert "--disable-custom-all-reduce" not in pod
        assert pod.count("--shutdown-timeout") == 1 and pod[pod.index("--shutdown-timeout") + 1] == "3"
        assert pod[pod.index("--pipeline-parallel-size") + 1] == "2"
    # The environment: revati run's (emulator_env), completed from the pod's.
    env = roles.replica_env(spec, 0, base={**os.environ, **_pod_env(tmp_path, timewarp=False),
                                            "REVATI_SIDECAR": "ipc:///run/revati/sidecar.sock"})
    for k in ("LD_PRELOAD", "TRITON_LIBCUDA_PATH", "REVATI_GPU", "REVATI_PREDICTOR", "REVATI_SIDECAR",
              "REVATI_ZMQ_LIB", "VLLM_NCCL_SO_PATH", "VLLM_ALLREDUCE_USE_FLASHINFER", "VLLM_USE_FLASHINFER_SAMPLER",
              "HF_HOME", "HF_HUB_OFFLINE"):
        assert env[k] == launched.env[k], k
    assert env["REVATI_NODE_NAME"] == "roles-replica-1"  # the pod's name, not replaced


def test_replica_waits_for_the_clock_page_then_execs(tmp_path, monkeypatch):
    from revati.timekeeper.clock_page import ClockPage

    p = _spec(tmp_path, replicas=2)
    pod = _pod_env(tmp_path, timewarp=True)
    for k, v in pod.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "sidecar.sock").touch()
    spec = load_spec(p)

    # No page: a clear error after the timeout.
    with pytest.raises(roles.RoleError, match=r"clock page .*clock did not appear in 0.5 s"):
        roles.replica_main(str(p), 1, 8000, wait_timeout_s=0.5, execvpe=None)

    # The relay creates the page while the role waits (on its first poll): the role execs.
    pages = []
    real_sleep = time.sleep

    def sleep_and_relay(s):
        if not pages:
            pages.append(ClockPage.create(tmp_path / "clock", sock_path=str(tmp_path / "tk.sock"), protocol_version=1))
        real_sleep(0)

    monkeypatch.setattr(roles.time, "sleep", sleep_and_relay)
    execs = []
    roles.replica_main(str(p), 1, 8000, wait_timeout_s=30, execvpe=lambda f, a, e: execs.append((f, a, e)))
    try:
        assert pages, "the role did not wait for the page"
        (f, argv, env), = execs
        assert f == argv[0] and argv == roles.replica_command(spec, 1)
        assert env["LD_PRELOAD"] == str(shim_dir() / SHIM_NAME)  # the pod's preload, named once
        assert env["REVATI_TIMEWARP"] == "1" and env["REVATI_CLOCK"] == str(tmp_path / "clock")
        assert env["REVATI_SIDECAR"] == pod["REVATI_SIDECAR"] and env["REVATI_PREDICTOR"] == "sidecar"
        assert env["HF_HUB_OFFLINE"] == "1"
    finally:
        for page in pages:
            page.close(unlink=True)


def test_replica_with_another_predictor_drops_the_sidecar(tmp_path):
    spec = load_spec(_spec(tmp_path, emulation={"timewarp": False, "predictor": "roofline"}))
    env = roles.replica_env(spec, 0, base={**os.environ, **_pod_env(tmp_path, timewarp=False)})
    assert env["REVATI_PREDICTOR"] == "roofline" and "REVATI_SIDECAR" not in env


# ---------------------------------------------------------------------------- router


def _backends_in_a_thread(names: list[str]):
    """Tiny aiohttp backends on an event loop in a thread. Returns (urls, stop)."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    urls: list[str] = []
    runners = []

    def app(name: str) -> web.Application:
        a = web.Application()

        async def completions(request):
            body = await request.json()
            return web.json_response({"backend": name, "n": body["n"]})

        async def health(request):
            return web.Response(text="ok")

        a.router.add_post("/v1/completions", completions)
        a.router.add_get("/health", health)
        return a

    async def start():
        for n in names:
            r = web.AppRunner(app(n))
            await r.setup()
            site = web.TCPSite(r, "127.0.0.1", 0)
            await site.start()
            runners.append(r)
            urls.append(f"http://127.0.0.1:{r.addresses[0][1]}")
        ready.set()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(30)

    def stop():
        async def cleanup():
            for r in runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)

    return urls, stop


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_router_role_proxies_round_robin_to_two_backends(tmp_path):
    urls, stop = _backends_in_a_thread(["r0", "r1"])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "revati.cli", "role", "router", "--port", str(port),
                             "--backends", ",".join(urls)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # until the router answers
            assert proc.poll() is None, proc.stdout.read()
            try:
                _get(base + "/revati/router", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "the router did not answer in 60 s"
                time.sleep(0.1)
        assert _get(base + "/health") == (200, b"ok")
        owners = []
        for n in range(4):
            req = urllib.request.Request(base + "/v1/completions", data=json.dumps({"n": n}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.loads(r.read())
            assert body["n"] == n
            owners.append(body["backend"])
        assert owners == ["r0", "r1", "r0", "r1"]
        stats = json.loads(_get(base + "/revati/router")[1])
        assert stats == {"backends": urls, "requests": [2, 2]}
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
        stop()
    assert f"round robin over {urls} on 0.0.0.0:{port}" in out  # bound to every interface


# ---------------------------------------------------------------------------- loadgen


def _bench_result() -> dict:
    """A `vllm bench serve --save-result --save-detailed` result of 3 requests (times in s)."""
    return {
        "date": "20261121-200000", "backend": "vllm", "model_id": MODEL, "tokenizer_id": MODEL, "num_prompts": 3,
        "request_rate": float("inf"), "burstiness": 1.0, "max_concurrency": None,
        "duration": 2.0, "completed": 3, "failed": 0, "total_input_tokens": 300, "total_output_tokens": 12,
        "request_throughput": 1.5, "request_goodput": 1.5, "output_throughput": 6.0, "total_token_throughput": 156.0,
        "mean_ttft_ms": 100.0, "median_ttft_ms": 100.0, "std_ttft_ms": 0.0, "p99_ttft_ms": 100.0,
        "input_lens": [100, 100, 100], "output_lens": [4, 4, 4],
        "ttfts": [0.1] * 3, "itls": [[0.02] * 3] * 3,
        "latencies": [0.16] * 3, "start_times": [50.0, 50.5, 51.0],
        "generated_texts": ["x" * 1000] * 3, "errors": ["", "", ""],
    }


class _Target(BaseHTTPRequestHandler):
    """A stand-in router: /health, /v1/models and /revati/router."""

    def do_GET(self):
        body = {"/health": b"ok",
                "/v1/models": json.dumps({"data": [{"id": MODEL}]}).encode(),
                "/revati/router": json.dumps({"backends": ["a", "b"], "requests": [2, 1]}).encode()}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *a):
        pass


@contextmanager
def _target():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _strict_json(text: str) -> dict:
    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=no_constants)


def test_loadgen_report_line_from_a_bench_result(tmp_path, monkeypatch, capsys):
    p = _spec(tmp_path, slo={"ttftMs": {"p99": 500}, "tpotMs": {"p99": 10}})
    for k, v in _pod_env(tmp_path, timewarp=True).items():
        monkeypatch.setenv(k, v)
    spec = load_spec(p)
    out = tmp_path / "results"
    seen = {}

    def fake_bench(args, env, out_dir, timeout_s):
        seen.update(args=args, env=env)
        (out_dir / "bench.json").write_text(json.dumps(_bench_result()))
        return roles.BenchRun(0, _bench_result(), virtual_s=2.1, wall_s=0.5)

    with _target() as url:
        rc = roles.loadgen_main(str(p), url, out, health_timeout_s=30, bench=fake_bench)
        plan = loadgen.plan(spec.spec, base_url=url, model=MODEL, tokenizer=MODEL, result_dir=out,
                            spec_dir=p.parent)
    assert rc == 0
    # The load is planned as revati run plans it; bench runs in the pod's clock.
    assert seen["args"] == plan.args and f"--base-url {url}" in " ".join(seen["args"])
    assert seen["env"]["PYTHONHASHSEED"] == "0" and seen["env"]["REVATI_TIMEWARP"] == "1"
    assert seen["env"]["LD_PRELOAD"] == str(shim_dir() / SHIM_NAME)
    stdout = capsys.readouterr().out
    lines = stdout.rstrip("\n").split("\n")
    last = lines[-1]
    assert last.startswith(roles.REPORT_PREFIX) and "Serving Benchmark Result" in stdout
    rep = _strict_json(last[len(roles.REPORT_PREFIX):])
    assert len(last.encode()) < roles.REPORT_LINE_LIMIT
    # metrics as revati run reports them; no per-request rows in the line
    assert rep["completed"] == 3 and rep["failed"] == 0 and rep["mean_ttft_ms"] == 100.0
    assert rep["p99_tpot_ms"] == pytest.approx(20.0) and rep["request_rate"] == "inf"
    assert not set(rep) & {"ttfts", "itls", "latencies", "generated_texts", "errors", "start_times"}
    assert rep["slo_attainment"] == [
        {"metric": "p99_ttft_ms", "target_ms": 500.0, "actual_ms": 100.0, "met": True},
        {"metric": "p99_tpot_ms", "target_ms": 10.0, "actual_ms": pytest.approx(20.0), "met": False}]
    e = rep["emulation"]
    assert (e["virtual_s"], e["wall_s"], e["speedup"], e["load_phase_virtual_s"]) == (2.0, 0.5, 4.0, 2.1)
    assert e["timewarp"] is True and e["platform"] == "kubernetes" and e["target"] == url
    # what a pod cannot know is left out, not written as null
    assert not set(e) & {"jumps", "setup_wall_s", "shim_steps", "trace", "contention_factor", "not_available_in_pod"}
    assert e["predictor"] == {"source": "sidecar"}
    assert e["topology"]["router_requests"] == [2, 1]
    assert e["load_generator"]["command"] == "vllm bench serve " + " ".join(plan.args)
    assert e["num_gpus"] == 1 and e["emulator_engine_args"] == ["--shutdown-timeout", "10"]
    assert any("Timekeeper's stats" in n for n in e["notes"])
    # report.json and requests.jsonl in --out
    full = json.loads((out / "report.json").read_text())
    assert full["completed"] == 3 and full["emulation"]["virtual_s"] == 2.0
    rows = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[2]["start_s"] == 1.0
    assert (out / "bench.cmd").read_text().startswith("vllm bench serve --backend vllm")
    assert yaml.safe_load((out / "spec.resolved.yaml").read_text())["spec"]["slo"]["tpotMs"]["p99"] == 10


def test_loadgen_fails_clearly_when_the_target_never_answers(tmp_path, monkeypatch, capsys):
    p = _spec(tmp_path, emulation={"timewarp": False})
    for k in ("REVATI_TIMEWARP", "REVATI_CLOCK"):
        monkeypatch.delenv(k, raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["role", "loadgen", "--spec", str(p), "--target", url, "--out", str(tmp_path / "o"),
                 "--health-timeout", "1"]) == 1
    cap = capsys.readouterr()
    assert f"the target {url} did not answer /health with 200 in 1 s" in cap.err
    assert roles.REPORT_PREFIX not in cap.out


def test_loadgen_fails_clearly_when_bench_fails(tmp_path, monkeypatch):
    p = _spec(tmp_path, emulation={"timewarp": False})
    for k in ("REVATI_TIMEWARP", "REVATI_CLOCK"):
        monkeypatch.delenv(k, raising=False)
    out = tmp_path / "o"

    def failing(args, env, out_dir, timeout_s):
        (out_dir / "bench.log").write_text("Traceback: boom\n")
        return roles.BenchRun(1, None, None, None)

    with _target() as url, pytest.raises(roles.RoleError, match=r"vllm bench serve failed \(1\)(.|\n)*boom"):
        roles.loadgen_main(str(p), url, out, health_timeout_s=10, bench=failing)


def test_run_bench_echoes_the_log_and_times_the_load_phase(tmp_path, capsys):
    script = ("import json, sys, pathlib\n"
              "print('preparing'); print('Starting main benchmark run...', flush=True)\n"
              "sys.stdout.write('  1/3 [\\r  3/3 [\\n')\n"
              "print('============ Serving Benchmark Result ============')\n"
              "pathlib.Path(sys.argv[sys.argv.index('--result-dir') + 1], 'bench.json').write_text("
              "json.dumps({'completed': 3}))\n")
    run = roles.run_bench(["--result-dir", str(tmp_path)], dict(os.environ), tmp_path, 60,
                          command=[sys.executable, "-c", script])
    assert run.rc == 0 and run.bench == {"completed": 3}
    assert run.wall_s is not None and 0 <= run.wall_s < 60 and run.virtual_s is not None
    out = capsys.readouterr().out
    assert "  3/3 [" in out and "1/3" not in out and "Serving Benchmark Result" in out
    assert "Starting main benchmark run" in (tmp_path / "bench.log").read_text()


def test_report_line_stays_under_the_limit():
    rep = {"completed": 3, "mean_ttft_ms": float("nan"), "ttfts": [0.1] * 10,
           "emulation": {"virtual_s": 2.0, "notes": ["n"], "huge": "x" * 50_000}}
    line = roles.report_line(rep)
    assert "ttfts" not in line and _strict_json(line[len(roles.REPORT_PREFIX):])["mean_ttft_ms"] is None
    small = roles.report_line(rep, limit=10_000)
    d = _strict_json(small[len(roles.REPORT_PREFIX):])
    assert len(small) <= 10_000 and "huge" not in d["emulation"] and d["emulation"]["virtual_s"] == 2.0
    assert "truncated" in d["emulation"] and d["completed"] == 3
