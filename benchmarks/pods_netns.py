"""The operator's pods, run on this machine: a small kubelet made of network namespaces.

Builds every object the operator creates for an EmulatedDeployment (operator/revati_operator/manifests.py:
build_all), and runs each pod's containers as the manifests say — the same commands, the same
environment (LD_PRELOAD, REVATI_*), the native sidecar (predictor + clock relay) before the main
container, the volumes at the same paths — with each pod in a network namespace of its own
(revati.timekeeper.netns) and Service names resolved through an /etc/hosts bind-mounted into
every pod. What is not Kubernetes: no images (the repository's .venv and shim/build/lib stand in
for them, bind-mounted at /opt/revati/shim), no user 10001 or read-only root, and the kubelet's
job is done here: start order, the sidecar's startup probe, the replicas' readiness probe.

The load generator's last `REVATI_REPORT` line (what the operator turns into status and the
report ConfigMap) is printed, next to `revati run` of the same spec on one host for comparison.
Needs root. Reproduce with:
    .venv/bin/python benchmarks/pods_netns.py [SPEC] [--no-local]
(default spec: a small Llama-3.1-8B TP=1 run with the constant:1ms predictor, so steps are
GPU-bound and the two runs are comparable on this CPU.)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO)) if str(REPO) not in sys.path else None
from revati.operator import manifests as m  # noqa: E402
from revati.timekeeper.netns import Hosts, available  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from netns_multihost import stop  # noqa: E402

DEFAULT_SPEC = """
apiVersion: revati.dev/v1alpha1
kind: EmulatedDeployment
metadata: {name: pods-demo}
spec:
  model: meta-llama/Llama-3.1-8B
  gpu: h100-sxm
  engine: {args: {max-num-seqs: 8, max-model-len: 1024, enforce-eager: true}}
  workload:
    dataset: {type: random, inputLen: 128, outputLen: 16}
    arrival: {process: constant, requestRate: 1}
    numPrompts: 8
  emulation: {predictor: "constant:1ms", hostContention: count}
"""
METRICS = (("ttftMs", "p50"), ("ttftMs", "p99"), ("tpotMs", "p50"), ("tpotMs", "p99"))


def pods_of(objs: list[dict]) -> list[tuple[str, str, dict]]:
    """(pod name, component, pod spec) for every Pod, Deployment and Job, in start order."""
    out = []
    for o in objs:
        if o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["metadata"]["labels"]["app.kubernetes.io/component"], o["spec"]))
        elif o["kind"] in ("Deployment", "Job"):
            t = o["spec"]["template"]
            out.append((o["metadata"]["name"] + ("-0" if o["kind"] == "Deployment" else "-run"),
                        t["metadata"]["labels"]["app.kubernetes.io/component"], t["spec"]))
    order = {"coordinator": 0, "replica": 1, "router": 2, "loadgen": 3}
    return sorted(out, key=lambda p: order[p[1]])


def env_of(container: dict, pod: str) -> dict[str, str]:
    env = {"PATH": f"{REPO}/.venv/bin:/usr/local/bin:/usr/bin:/bin"}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod
    return env


class Kubelet:
    def __init__(self, cr: dict, work: Path):
        self.cr, self.work = cr, work
        self.objs = m.build_all(cr)
        self.pods = pods_of(self.objs)
        self.hosts = Hosts([f"rvp-{i}" for i in range(len(self.pods))], prefix="10.79.0", bridge="rvp-br0")
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def up(self) -> None:
        self.hosts.up()
        self.ns = {pod: self.hosts.names[i] for i, (pod, _, _) in enumerate(self.pods)}
        self.ip = {pod: self.hosts.addresses[self.ns[pod]] for pod in self.ns}
        # Services -> the IP of the pod their selector picks.
        lines = ["127.0.0.1 localhost"]
        for o in self.objs:
            if o["kind"] == "Service":
                comp = o["spec"]["selector"]["app.kubernetes.io/component"]
                match = [p for p, c, _ in self.pods if c == comp
                         and (comp != "replica" or p == o["metadata"]["name"])]
                lines.append(f"{self.ip[match[0]]} {o['metadata']['name']}")
        (self.work / "hosts").write_text("\n".join(lines) + "\n")
        spec_dir = self.work / "spec"
        spec_dir.mkdir(exist_ok=True)
        (spec_dir / "spec.yaml").write_text(m.build_spec_configmap(self.cr)["data"]["spec.yaml"])

    def _mounts(self, pod: str, container: dict) -> list[tuple[Path, str]]:
        base = self.work / pod
        out = [(self.work / "hosts", "/etc/hosts")]
        for v in container.get("volumeMounts", []):
            if v["name"] == "shim":
                src = REPO / "shim" / "build" / "lib"  # what the shim init container copies
            elif v["name"] == "spec":
                src = self.work / "spec"
            elif v["name"] == "secret":  # the deployment's Secret (the operator creates it: build_secret)
                src = self.work / "secret"
                if not (src / m.SECRET_KEY).exists():
                    src.mkdir(mode=0o700, exist_ok=True)
                    sec = m.build_secret(self.cr)
                    (src / m.SECRET_KEY).write_bytes(base64.b64decode(sec["data"][m.SECRET_KEY]))
                    (src / m.SECRET_KEY).chmod(0o400)
            else:  # emptyDirs, one per pod
                src = base / v["name"]
                src.mkdir(parents=True, exist_ok=True)
            out.append((src, v["mountPath"]))
        return out

    def start(self, pod: str, container: dict) -> subprocess.Popen:
        # /tmp last: the work dir lives under /tmp, and binding over /tmp hides the sources after it.
        mounts = sorted(self._mounts(pod, container), key=lambda sd: sd[1] == "/tmp")
        script = " && ".join((f"mkdir -p {shlex.quote(dst)} && " if src.is_dir() else "")
                             + f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in mounts)
        cmd = ["ip", "netns", "exec", self.ns[pod], "unshare", "--mount", "--propagation", "private", "sh", "-c",
               script + ' && exec "$@"', "sh", "env", "-i",
               *[f"{k}={v}" for k, v in env_of(container, pod).items()], *container["command"]]
        log = (self.work / f"{pod}.{container['name']}.log").open("w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((f"{pod}/{container['name']}", p))
        return p

    def run_pod(self, pod: str, spec: dict) -> subprocess.Popen:
        """Native sidecars first (until their startup probe passes), then the main container."""
        for c in spec.get("initContainers", []):
            if c.get("restartPolicy") != "Always":
                continue  # the shim copy: the repository's build is mounted instead
            self.start(pod, c)
            probe = c.get("startupProbe", {}).get("exec", {}).get("command", [])
            if probe[:2] == ["test", "-e"]:
                path = self.work / pod / "run" / Path(probe[2]).relative_to(m.RUN_DIR)
                self.wait(lambda: path.exists(), 120, f"{pod}: {c['name']} startup probe")
        (main,) = spec["containers"]
        return self.start(pod, main)

    def wait(self, ok, timeout: float, what: str) -> None:
        t0 = time.monotonic()
        while not ok():
            for name, p in self.procs:
                if p.poll() is not None and not name.endswith("/loadgen"):
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}:\n"
                                       + (self.work / (name.replace('/', '.') + '.log')).read_text()[-3000:])
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def ready(self, pod: str) -> bool:
        probe = ["ip", "netns", "exec", self.ns[pod], "curl", "-sf", "-m", "2", f"http://{self.ip[pod]}:8000/health"]
        return subprocess.run(probe, capture_output=True).returncode == 0

    def down(self) -> None:
        stop([p for _, p in self.procs])
        self.hosts.down()


def run_pods(cr: dict, work: Path) -> dict:
    k = Kubelet(cr, work)
    t0 = time.monotonic()
    try:
        k.up()
        loadgen = None
        for pod, comp, spec in k.pods:
            if comp == "loadgen":
                loadgen = k.run_pod(pod, spec)
                continue
            k.run_pod(pod, spec)
            if comp == "replica":
                k.wait(lambda: k.ready(pod), 1800, f"{pod} readiness")
                print(f"pods: {pod} Ready after {time.monotonic() - t0:.0f} s", flush=True)
        rc = loadgen.wait(3600)
        log = (work / f"{k.pods[-1][0]}.loadgen.log").read_text()
        report = m.parse_report(log)
        print(f"pods: loadgen exited {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if report is None:
            raise RuntimeError(f"no REVATI_REPORT line in the loadgen's log:\n{log[-3000:]}")
        return report
    finally:
        k.down()


def metric(report: dict, group: str, q: str) -> float:
    """A latency percentile from a report, read as the operator reads it into status."""
    v = (m.status_from_report(report)["metrics"].get(group) or {}).get(q)
    return float("nan") if v is None else v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", nargs="?", help="an EmulatedDeployment YAML (default: a small built-in one)")
    ap.add_argument("--no-local", action="store_true", help="skip `revati run` of the same spec")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    why = available()
    if why:
        print(f"pods_netns: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cr = yaml.safe_load(Path(args.spec).read_text() if args.spec else DEFAULT_SPEC)
    cr["metadata"].setdefault("namespace", "default")
    cr["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")  # as the API server would add
    work = Path(args.workdir or tempfile.mkdtemp(prefix="revati-pods-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}  (work dir {work})", flush=True)
    pods = run_pods(cr, work)
    (work / "pods-report.json").write_text(json.dumps(pods, indent=1))
    rows = {"pods": pods}
    if not args.no_local:
        spec_file = work / "spec" / "spec.yaml"
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "revati.cli", "run", str(spec_file), "--out", str(work / "local")],
                           cwd=REPO, capture_output=True, text=True)
        if r.returncode:
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
        print(f"revati run: {time.monotonic() - t0:.0f} s", flush=True)
        rows["revati run"] = json.loads((work / "local" / "report.json").read_text())
    for name, rep in rows.items():
        print(f"{name:>10}: " + ", ".join(f"{g} {q} {metric(rep, g, q):.1f}" for g, q in METRICS)
              + f", completed {m.status_from_report(rep)['metrics'].get('completed')}")
    if len(rows) == 2:
        for g, q in METRICS:
            a, b = metric(rows["pods"], g, q), metric(rows["revati run"], g, q)
            print(f"{g} {q}: pods {a:.1f}, revati run {b:.1f}: {100 * abs(a - b) / b:.1f}% apart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
