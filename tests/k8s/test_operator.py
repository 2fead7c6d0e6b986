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
from tests.k8s.conftest import NAMESPACE, raw, wait_for  # noqa: F401 (fixtures come from conftest)

GROUP, VERSION, EMD, EMS = "revati.dev", "v1alpha1", "emulateddeployments", "emulationsweeps"

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


@pytest.fixture
def kc(api) -> Cluster:
    return Cluster(api)


def expected_objects(n: str, replicas: int) -> set[tuple[str, str]]:
    out = {("ConfigMap", f"{n}-spec"), ("Deployment", f"{n}-coordinator"), ("Service", f"{n}-coordinator"),
           ("Deployment", f"{n}-router"), ("Service", f"{n}-router")}
    for i in range(replicas):
        out |= {("Pod", f"{n}-replica-{i}"), ("Service", f"{n}-replica-{i}")}
    return out


def test_apply_creates_exactly_the_expected_objects_with_owner_references(operator, kc):
    cr = kc.apply(emd("demo"))
    want = expected_objects("demo", 2)
    wait_for(lambda: kc.phase("demo") == "Starting", what="phase Starting")
    objs = kc.objects()
    assert set(objs) == want
    uid = cr["metadata"]["uid"]
    for (kind, name), obj in objs.items():
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmulatedDeployment", "name": "demo",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}], (kind, name)
        assert obj["metadata"]["labels"][mf.LABEL_DEPLOYMENT] == "demo"
    status = kc.get("demo")["status"]
    assert status["gpus"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
    # The spec ConfigMap holds the CR as a revati run spec.
    spec = yaml.safe_load(objs[("ConfigMap", "demo-spec")]["data"]["spec.yaml"])
    assert spec["kind"] == "EmulatedDeployment" and spec["spec"] == SPEC
    # The CR carries kopf's finalizer, so deletion runs the cleanup handler.
    wait_for(lambda: "revati.dev/cleanup" in kc.get("demo")["metadata"].get("finalizers", []),
             what="kopf's finalizer on the CR")
