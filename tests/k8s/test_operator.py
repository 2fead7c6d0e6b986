"""The real kopf operator (revati.operator.handlers, run by kopf.testing.KopfRunner) against the
in-memory API server of conftest.py, driven with the real `kubernetes` client.

The mock cluster has no kubelet and no controllers: the tests play them, patching pod and Job
statuses and serving the loadgen pod's log. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import copy
import json

import kubernetes
import pytest
import yaml

from revati.operator import manifests as mf
from revati.spec.crds import EmulatedDeploymentStatus, EmulationSweepStatus
from tests.k8s.conftest import NAMESPACE, raw, wait_for  # noqa: F401 (fixtures come from conftest)

GROUP, VERSION, EMD, EMS = "revati.dev", "v1alpha1", "emulateddeployments", "emulationsweeps"
TERMINAL = ("Succeeded", "Failed")

SPEC = {
    "model": "meta-llama/Llama-3.1-8B",
    "gpu": "h100-sxm",
    "tensorParallelSize": 1,
    "replicas": 2,
    "workload": {"dataset": {"type": "random", "inputLen": 128, "outputLen": 32},
                 "arrival": {"process": "poisson", "requestRate": 4}, "numPrompts": 20},
    "slo": {"ttftMs": {"p99": 500}, "tpotMs": {"p99": 50}},
}

REPORT = {
    "completed": 20, "failed": 0, "request_throughput": 3.9, "output_throughput": 124.8,
    "request_goodput": 3.5,
    "p50_ttft_ms": 41.0, "p99_ttft_ms": 88.5, "p50_tpot_ms": 9.1, "p99_tpot_ms": 12.7,
    "p50_e2el_ms": 330.0, "p99_e2el_ms": 480.2,
    "emulation": {"virtual_s": 5.2, "wall_s": 26.0, "speedup": 0.2},
}


def emd(name: str, spec: dict | None = None) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmulatedDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": copy.deepcopy(spec or SPEC)}


class Cluster:
    """Shortcuts over the real client."""

    def __init__(self, api: kubernetes.client.ApiClient):
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def apply(self, body: dict, plural: str = EMD) -> dict:
        return raw(self.custom.create_namespaced_custom_object, GROUP, VERSION, NAMESPACE, plural, body)

    def get(self, name: str, plural: str = EMD) -> dict:
        return raw(self.custom.get_namespaced_custom_object, GROUP, VERSION, NAMESPACE, plural, name)

    def list_crs(self, plural: str = EMD) -> list[dict]:
        return raw(self.custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, plural)["items"]

    def delete(self, name: str, plural: str = EMD) -> None:
        raw(self.custom.delete_namespaced_custom_object, GROUP, VERSION, NAMESPACE, plural, name)

    def phase(self, name: str, plural: str = EMD) -> str | None:
        return (self.get(name, plural).get("status") or {}).get("phase")

    def objects(self) -> dict[tuple[str, str], dict]:
        """Every namespaced object the operator may create, by (kind, name)."""
        out = {}
        for kind, fn in (("ConfigMap", self.core.list_namespaced_config_map),
                         ("Service", self.core.list_namespaced_service),
                         ("Pod", self.core.list_namespaced_pod),
                         ("Deployment", self.apps.list_namespaced_deployment),
                         ("Job", self.batch.list_namespaced_job)):
            for obj in raw(fn, NAMESPACE)["items"]:
                out[(kind, obj["metadata"]["name"])] = obj
        return out

    def set_pod_status(self, name: str, status: dict) -> None:
        raw(self.core.patch_namespaced_pod_status, name, NAMESPACE, {"status": status},
            _content_type="application/merge-patch+json")

    def make_ready(self, name: str) -> None:
        self.set_pod_status(name, {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                                   "containerStatuses": [{"name": "engine", "ready": True, "restartCount": 0,
                                                          "image": "x", "imageID": "", "state": {"running": {}}}]})


@pytest.fixture(scope="module")
def kc(api) -> Cluster:
    return Cluster(api)


def expected_objects(n: str, replicas: int) -> set[tuple[str, str]]:
    out = {("ConfigMap", f"{n}-spec"), ("Deployment", f"{n}-coordinator"), ("Service", f"{n}-coordinator"),
           ("Deployment", f"{n}-router"), ("Service", f"{n}-router")}
    for i in range(replicas):
        out |= {("Pod", f"{n}-replica-{i}"), ("Service", f"{n}-replica-{i}")}
    return out


def objects_of(kc: Cluster, n: str) -> dict[tuple[str, str], dict]:
    """Objects that belong to deployment n: its label, or its name prefix, or an owner reference to it."""
    return {key: obj for key, obj in kc.objects().items()
            if obj["metadata"].get("labels", {}).get(mf.LABEL_DEPLOYMENT) == n
            or key[1].startswith(f"{n}-")
            or any(r.get("name") == n for r in obj["metadata"].get("ownerReferences") or [])}


def versions(objs: dict) -> dict:
    return {key: obj["metadata"]["resourceVersion"] for key, obj in objs.items()}


def condition(cr: dict, ctype: str) -> dict:
    return next(c for c in (cr.get("status") or {}).get("conditions") or [] if c["type"] == ctype)


def start(kc: Cluster, name: str, spec: dict | None = None) -> dict:
    cr = kc.apply(emd(name, spec))
    wait_for(lambda: kc.phase(name) == "Starting", what=f"{name}: phase Starting")
    return cr


def run_loadgen(kc: Cluster, cluster, name: str, log: str, exit_code: int = 0, message: str = "") -> None:
    """Plays the Job controller and the kubelet: a pod from the Job's template, its log, its exit."""
    job = raw(kc.batch.read_namespaced_job, f"{name}-loadgen", NAMESPACE)
    tmpl = job["spec"]["template"]
    pod_name = f"{name}-loadgen-x7k2q"
    raw(kc.core.create_namespaced_pod, NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": dict(tmpl["metadata"]["labels"], **{"job-name": job["metadata"]["name"]}),
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                          "uid": job["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": tmpl["spec"]})
    cluster.set_pod_log(NAMESPACE, pod_name, log)
    ok = exit_code == 0
    kc.set_pod_status(pod_name, {
        "phase": "Succeeded" if ok else "Failed",
        "containerStatuses": [{"name": "loadgen", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if ok else "Error",
                                                        "message": message}}}]})
    cond = {"type": "Complete" if ok else "Failed", "status": "True", "reason": "Completed" if ok else "BackoffLimitExceeded",
            "message": "" if ok else "Job has reached the specified backoff limit"}
    raw(kc.batch.patch_namespaced_job_status, f"{name}-loadgen", NAMESPACE,
        {"status": {"succeeded" if ok else "failed": 1, "conditions": [cond]}},
        _content_type="application/merge-patch+json")


# --- tests -----------------------------------------------------------------------------------

def test_apply_creates_exactly_the_expected_objects_with_owner_references(operator, kc):
    cr = start(kc, "demo")
    objs = objects_of(kc, "demo")
    assert set(objs) == expected_objects("demo", 2)
    uid = cr["metadata"]["uid"]
    for (kind, name), obj in objs.items():
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmulatedDeployment", "name": "demo",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}], (kind, name)
        assert obj["metadata"]["labels"][mf.LABEL_DEPLOYMENT] == "demo"
    status = kc.get("demo")["status"]
    assert status["gpus"] == 2
    assert condition(kc.get("demo"), "Ready")["status"] == "False"
    assert condition(kc.get("demo"), "SpecValid")["status"] == "True"
    # The spec ConfigMap holds the CR as a revati run spec.
    spec = yaml.safe_load(objs[("ConfigMap", "demo-spec")]["data"]["spec.yaml"])
    assert spec["kind"] == "EmulatedDeployment" and spec["spec"] == SPEC
    # No pod asks for a GPU.
    pod = objs[("Pod", "demo-replica-0")]
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert set(c["resources"]["requests"]) == {"cpu", "memory"} == set(c["resources"]["limits"])
    # The CR carries the operator's finalizer, so deletion runs the cleanup handler.
    wait_for(lambda: "revati.dev/cleanup" in kc.get("demo")["metadata"].get("finalizers", []),
             what="the operator's finalizer on the CR")


def test_reconcile_twice_changes_nothing_and_existing_objects_are_adopted(operator, kc, cluster):
    from revati.operator import handlers

    # An object left over (no owner) before the CR exists: the operator adopts it, not duplicates it.
    raw(kc.core.create_namespaced_config_map, NAMESPACE,
        {"metadata": {"name": "adopt-spec"}, "data": {"spec.yaml": "stale"}})
    cr = start(kc, "adopt", dict(SPEC, replicas=1))
    cm = raw(kc.core.read_namespaced_config_map, "adopt-spec", NAMESPACE)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    assert yaml.safe_load(cm["data"]["spec.yaml"])["metadata"]["name"] == "adopt"
    assert set(objects_of(kc, "adopt")) == expected_objects("adopt", 1)

    before = versions(objects_of(kc, "adopt"))
    status_before = kc.get("adopt")["status"]
    assert handlers.reconcile_deployment(NAMESPACE, "adopt") == "Starting"
    assert handlers.reconcile_deployment(NAMESPACE, "adopt") == "Starting"
    # An event on the CR makes the running operator reconcile too.
    raw(kc.custom.patch_namespaced_custom_object, GROUP, VERSION, NAMESPACE, EMD, "adopt",
        {"metadata": {"annotations": {"test/poke": "1"}}}, _content_type="application/merge-patch+json")
    wait_for(lambda: kc.get("adopt")["metadata"]["annotations"].get("test/poke") == "1", what="the poke")
    assert versions(objects_of(kc, "adopt")) == before
    assert kc.get("adopt")["status"] == status_before


def test_ready_replicas_move_to_running_and_a_report_to_succeeded(operator, kc, cluster):
    start(kc, "happy")
    kc.make_ready("happy-replica-0")
    # One of two replicas Ready: still Starting, the condition counts.
    wait_for(lambda: condition(kc.get("happy"), "ReplicasReady")["message"] == "1/2 replica pods Ready",
             what="ReplicasReady 1/2")
    assert kc.phase("happy") == "Starting"
    assert ("Job", "happy-loadgen") not in objects_of(kc, "happy")
    kc.make_ready("happy-replica-1")
    wait_for(lambda: kc.phase("happy") == "Running", what="phase Running")
    job = objects_of(kc, "happy")[("Job", "happy-loadgen")]
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["ownerReferences"][0]["name"] == "happy"

    log = "starting\nREVATI_REPORT {\"completed\": 1}\nprogress 100%\nREVATI_REPORT " + json.dumps(
        REPORT, separators=(",", ":")) + "\n"
    run_loadgen(kc, cluster, "happy", log)
    wait_for(lambda: kc.phase("happy") == "Succeeded", what="phase Succeeded")
    st = kc.get("happy")["status"]
    assert st["reportConfigMap"] == "happy-report"
    assert st["metrics"] == {"ttftMs": {"p50": 41.0, "p99": 88.5}, "tpotMs": {"p50": 9.1, "p99": 12.7},
                             "e2elMs": {"p50": 330.0, "p99": 480.2}, "requestThroughput": 3.9,
                             "outputThroughput": 124.8, "goodput": 3.5, "completed": 20, "failed": 0}
    assert (st["virtualSeconds"], st["wallSeconds"], st["speedup"]) == (5.2, 26.0, 0.2)
    assert condition(kc.get("happy"), "Ready")["status"] == "True"
    EmulatedDeploymentStatus.model_validate(st)  # the CRD's status schema (unknown fields are errors)
    cm = raw(kc.core.read_namespaced_config_map, "happy-report", NAMESPACE)
    assert json.loads(cm["data"]["report.json"]) == REPORT  # the LAST REVATI_REPORT line
    assert cm["metadata"]["ownerReferences"][0]["name"] == "happy"


def test_deadlocked_replica_fails_with_the_emulators_message(operator, kc):
    start(kc, "stuck", dict(SPEC, replicas=1))
    message = ("revati: time warp: deadlock: every thread on the 1 host(s) waits for another with no timer "
               "pending (virtual t=12.5 s)")
    kc.set_pod_status("stuck-replica-0", {
        "phase": "Failed",
        "containerStatuses": [{"name": "engine", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": message}}}]})
    wait_for(lambda: kc.phase("stuck") == "Failed", what="phase Failed")
    failed = condition(kc.get("stuck"), "Failed")
    assert failed["status"] == "True" and failed["reason"] == "EmulatedDeadlock"
    assert message in failed["message"] and "stuck-replica-0" in failed["message"]
    EmulatedDeploymentStatus.model_validate(kc.get("stuck")["status"])
    assert "exit code 3" in failed["message"]


def test_failed_loadgen_and_missing_report_fail_the_run(operator, kc, cluster):
    start(kc, "crash", dict(SPEC, replicas=1))
    kc.make_ready("crash-replica-0")
    wait_for(lambda: kc.phase("crash") == "Running", what="phase Running")
    run_loadgen(kc, cluster, "crash", "Traceback ...\nConnectionError: router unreachable\n", exit_code=1,
                message="ConnectionError: router unreachable")
    wait_for(lambda: kc.phase("crash") == "Failed", what="phase Failed")
    failed = condition(kc.get("crash"), "Failed")
    assert failed["reason"] == "LoadgenFailed" and "router unreachable" in failed["message"]

    # The loadgen exits 1 when requests failed, after printing its report: the report is kept.
    start(kc, "partial", dict(SPEC, replicas=1))
    kc.make_ready("partial-replica-0")
    wait_for(lambda: kc.phase("partial") == "Running", what="phase Running")
    rep = dict(REPORT, completed=17, failed=3)
    run_loadgen(kc, cluster, "partial", "REVATI_REPORT " + json.dumps(rep) + "\n", exit_code=1,
                message="REVATI_REPORT {...}")
    wait_for(lambda: kc.phase("partial") == "Failed", what="phase Failed")
    st = kc.get("partial")["status"]
    failed = condition(kc.get("partial"), "Failed")
    assert failed["reason"] == "RequestsFailed" and "3 request(s) failed, 17 completed" in failed["message"]
    assert st["metrics"]["failed"] == 3 and st["reportConfigMap"] == "partial-report"
    assert json.loads(raw(kc.core.read_namespaced_config_map, "partial-report", NAMESPACE)["data"]["report.json"]) == rep

    start(kc, "mute", dict(SPEC, replicas=1))
    kc.make_ready("mute-replica-0")
    wait_for(lambda: kc.phase("mute") == "Running", what="phase Running")
    run_loadgen(kc, cluster, "mute", "no report here\n")
    wait_for(lambda: kc.phase("mute") == "Failed", what="phase Failed")
    assert condition(kc.get("mute"), "Failed")["reason"] == "NoReport"


def test_temporary_api_errors_are_retried(operator, kc, cluster):
    # The API server refuses the first creations of the spec ConfigMap and of the first replica pod.
    cm_fault = cluster.inject_fault("POST", r"/namespaces/revati-test/configmaps$", status=503, times=2)
    pod_fault = cluster.inject_fault("POST", r"/namespaces/revati-test/pods$", status=500, times=1)
    start(kc, "flaky", dict(SPEC, replicas=1))
    assert cm_fault["hits"] == 2 and pod_fault["hits"] == 1
    assert set(objects_of(kc, "flaky")) == expected_objects("flaky", 1)


def test_invalid_spec_fails_with_a_condition_naming_the_fields(operator, kc):
    bad = dict(SPEC, tensorParallelSize=16, gpu="h100-sxm")
    bad["workload"] = dict(SPEC["workload"], numPrompts=0)
    kc.apply(emd("typo", bad))
    wait_for(lambda: kc.phase("typo") == "Failed", what="phase Failed")
    failed = condition(kc.get("typo"), "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "workload.numPrompts" in failed["message"]
    assert not objects_of(kc, "typo")  # nothing was created


def test_deletion_cleans_up(operator, kc, cluster):
    start(kc, "gone")
    kc.make_ready("gone-replica-0")
    kc.make_ready("gone-replica-1")
    wait_for(lambda: kc.phase("gone") == "Running", what="phase Running")
    assert ("Job", "gone-loadgen") in objects_of(kc, "gone")
    run_loadgen(kc, cluster, "gone", "REVATI_REPORT " + json.dumps(REPORT) + "\n")
    wait_for(lambda: kc.phase("gone") == "Succeeded", what="phase Succeeded")
    assert ("ConfigMap", "gone-report") in objects_of(kc, "gone")
    kc.delete("gone")
    wait_for(lambda: not any(c["metadata"]["name"] == "gone" for c in kc.list_crs()), what="the CR gone")
    try:
        wait_for(lambda: not objects_of(kc, "gone"), what="every object of the deployment gone")
    except AssertionError:
        raise AssertionError(f"left over: {sorted(objects_of(kc, 'gone'))}") from None


# --- EmulationSweep ------------------------------------------------------------------------

def sweep_body(name: str) -> dict:
    base = dict(SPEC, replicas=1)
    base.pop("slo")
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmulationSweep",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"base": base,
                     "grid": {"tensorParallelSize": [1, 2], "workload.arrival.requestRate": [2, 4]},
                     "slo": {"ttftMs": {"p99": 500}, "tpotMs": {"p99": 50}},
                     "prices": {"h100-sxm": 2.0},
                     "maxParallel": 2}}


def finish_child(kc: Cluster, name: str, phase: str, metrics: dict | None) -> None:
    """Plays a finished emulation: the child's status as the operator would write it."""
    wait_for(lambda: kc.phase(name) == "Starting", what=f"{name}: Starting")
    status = {"phase": phase}
    if metrics:
        status["metrics"] = metrics
    raw(kc.custom.patch_namespaced_custom_object_status, GROUP, VERSION, NAMESPACE, EMD, name,
        {"status": status}, _content_type="application/merge-patch+json")


def test_sweep_creates_children_in_bounded_parallel_and_ranks_them(operator, kc):
    sweep = kc.apply(sweep_body("sw"), EMS)
    names = [f"sw-{i}" for i in range(4)]

    def children() -> dict[str, dict]:
        return {c["metadata"]["name"]: c for c in kc.list_crs() if c["metadata"]["name"] in names}

    def unfinished() -> int:
        return sum(1 for c in children().values() if (c.get("status") or {}).get("phase") not in TERMINAL)

    wait_for(lambda: set(children()) == {"sw-0", "sw-1"}, what="the first maxParallel=2 children")
    for c in children().values():
        assert c["metadata"]["ownerReferences"][0]["uid"] == sweep["metadata"]["uid"]
        assert c["metadata"]["labels"]["revati.dev/sweep"] == "sw"
    assert children()["sw-1"]["spec"]["workload"]["arrival"]["requestRate"] == 4
    assert children()["sw-1"]["spec"]["slo"] == {"ttftMs": {"p99": 500}, "tpotMs": {"p99": 50}}
    wait_for(lambda: kc.phase("sw", EMS) == "Running", what="sweep Running")

    results = {
        "sw-0": ("Succeeded", {"ttftMs": {"p99": 200.0}, "tpotMs": {"p99": 30.0}, "outputThroughput": 100.0,
                            "completed": 20}),
        "sw-1": ("Succeeded", {"ttftMs": {"p99": 900.0}, "tpotMs": {"p99": 40.0}, "outputThroughput": 180.0,
                            "completed": 20}),
        "sw-2": ("Succeeded", {"ttftMs": {"p99": 150.0}, "tpotMs": {"p99": 20.0}, "outputThroughput": 190.0,
                            "completed": 20}),
        "sw-3": ("Failed", None),
    }
    finish_child(kc, "sw-0", *results["sw-0"])
    wait_for(lambda: "sw-2" in children(), what="sw-2 after sw-0 finished")
    assert "sw-3" not in children() and unfinished() <= 2
    finish_child(kc, "sw-1", *results["sw-1"])
    wait_for(lambda: "sw-3" in children(), what="sw-3 after sw-1 finished")
    assert unfinished() <= 2
    finish_child(kc, "sw-2", *results["sw-2"])
    finish_child(kc, "sw-3", *results["sw-3"])
    wait_for(lambda: kc.phase("sw", EMS) == "Succeeded", what="sweep Succeeded")

    st = kc.get("sw", EMS)["status"]
    assert st["progress"] == "4/4"
    assert [c["name"] for c in st["children"]] == names
    rows = {c["name"]: c for c in st["children"]}
    assert rows["sw-0"]["params"] == {"tensorParallelSize": 1, "workload.arrival.requestRate": 2}
    assert [rows[n]["gpus"] for n in names] == [1, 1, 2, 2]
    assert [rows[n]["costPerHour"] for n in names] == [2.0, 2.0, 4.0, 4.0]
    assert [rows[n]["meetsSlo"] for n in names] == [True, False, True, False]
    assert st["cheapest"] == {"name": "sw-0", "params": {"tensorParallelSize": 1, "workload.arrival.requestRate": 2},
                              "gpus": 1, "costPerHour": 2.0}
    assert st["pareto"] == ["sw-2"]
    assert st["ranking"] == ["sw-0", "sw-2", "sw-1"]
    EmulationSweepStatus.model_validate(st)

    # Deleting the sweep deletes its children (and, through them, their objects).
    kc.delete("sw", EMS)
    wait_for(lambda: not children() and not any(c["metadata"]["name"] == "sw" for c in kc.list_crs(EMS)),
             what="the sweep and its children gone")
    try:
        wait_for(lambda: not any(objects_of(kc, n) for n in names), what="the children's objects gone")
    except AssertionError:
        left = {n: sorted(objects_of(kc, n)) for n in names}
        raise AssertionError(f"left over: {left}") from None


def test_invalid_sweep_fails_naming_the_field(operator, kc):
    body = sweep_body("badsw")
    body["spec"]["grid"] = {"tensorParalelSize": [1, 2]}
    kc.apply(body, EMS)
    wait_for(lambda: kc.phase("badsw", EMS) == "Failed", what="sweep Failed")
    failed = condition(kc.get("badsw", EMS), "Failed")
    assert failed["reason"] == "InvalidSpec" and "tensorParalelSize" in failed["message"]


def test_pod_failure_reasons():
    from revati.operator.deployments import pod_failure

    def pod(**status) -> dict:
        return {"metadata": {"name": "p"}, "status": status}

    def term(code: int, reason: str = "Error", message: str = "", where: str = "state") -> dict:
        return {"name": "engine", where: {"terminated": {"exitCode": code, "reason": reason, "message": message}}}

    assert pod_failure(pod(phase="Running", containerStatuses=[{"name": "engine", "state": {"running": {}}}])) is None
    assert pod_failure(pod(phase="Succeeded", containerStatuses=[term(0, "Completed")])) is None
    reason, msg = pod_failure(pod(containerStatuses=[term(3)]))
    assert reason == "EmulatedDeadlock" and "exit code 3" in msg
    reason, msg = pod_failure(pod(containerStatuses=[term(1, message="revati: time warp: deadlock: rank 1 lost")]))
    assert reason == "EmulatedDeadlock" and msg.endswith("revati: time warp: deadlock: rank 1 lost")
    assert pod_failure(pod(containerStatuses=[term(137, "OOMKilled")]))[0] == "OOMKilled"
    # A restarted container (Deployment pods restart) still fails the run: the clock is shared.
    restarted = term(2, where="lastState")
    restarted["state"] = {"running": {}}
    assert pod_failure(pod(phase="Running", containerStatuses=[restarted]))[0] == "ApiServerCrashed"
    # The sidecar and the shim init container count too.
    assert "container shim" in pod_failure(pod(initContainerStatuses=[dict(term(1), name="shim")]))[1]
    assert pod_failure(pod(phase="Failed", reason="Evicted", message="The node was low on memory."))[1] == (
        "pod p failed: The node was low on memory.")


def test_pod_failures_are_named_like_revati_runs_faults():
    """The same cause gets the same condition as a local `revati run` (revati/run/faults.py)."""
    from revati.operator.deployments import pod_failure

    def pod(component: str, container: str, code: int, message: str = "") -> dict:
        term = {"exitCode": code, "reason": "Error", "message": message}
        return {"metadata": {"name": "p", "labels": {"app.kubernetes.io/component": component}},
                "status": {"containerStatuses": [{"name": container, "state": {"terminated": term}}]}}

    worker = ("(EngineCore_DP0 pid=12) ERROR multiproc_executor.py:316] Worker proc VllmWorker-1 died "
              "unexpectedly (exit code: -9), shutting down executor.")
    reason, msg = pod_failure(pod("replica", "engine", 1, worker))
    assert reason == "WorkerCrashed" and msg.endswith(worker)
    engine = "(APIServer pid=7) WARNING core_client.py:818] [shutdown] MPClient: engine core exited unexpectedly"
    assert pod_failure(pod("replica", "engine", 1, engine))[0] == "EngineCrashed"
    reason, msg = pod_failure(pod("replica", "engine", 137))
    assert reason == "ApiServerCrashed" and "killed by SIGKILL" in msg
    assert pod_failure(pod("replica", "sidecar", 137))[0] == "SidecarCrashed"
    assert pod_failure(pod("coordinator", "coordinator", 1))[0] == "CoordinatorCrashed"
    assert pod_failure(pod("router", "router", 137))[0] == "RouterCrashed"
    assert pod_failure(pod("loadgen", "loadgen", 137))[0] == "LoadgenCrashed"
    assert pod_failure(pod("loadgen", "loadgen", 1))[0] == "PodFailed"  # _fail: LoadgenFailed / RequestsFailed
    assert pod_failure(pod("replica", "engine", 3))[0] == "EmulatedDeadlock"
