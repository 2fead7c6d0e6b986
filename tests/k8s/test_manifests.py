"""Pure checks of revati.operator.manifests: the objects built from an EmulatedDeployment."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from revati.operator import manifests as mf
from revati.spec import SpecError

REPO = Path(__file__).resolve().parents[2]
IMAGES = mf.Images(runtime="r:1", sidecar="s:1", shim="m:1")


def cr_from(path: str, *, name: str | None = None, **spec) -> dict:
    cr = yaml.safe_load((REPO / path).read_text())
    cr["metadata"].update(namespace="team-a", uid="0b7c-uid", resourceVersion="12", generation=1,
                          annotations={"kopf.zalando.org/x": "y"})
    if name:
        cr["metadata"]["name"] = name
    cr["spec"].update(spec)
    return cr


@pytest.fixture
def cr() -> dict:
    return cr_from("examples/default.yaml", name="llm", replicas=2)


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        if o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["spec"]))
        elif o["kind"] in ("Deployment", "Job"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
    return out


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def env(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


def by_name(objs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_build_all_names_kinds_owner_and_labels(cr):
    objs = mf.build_all(cr, IMAGES) + [mf.build_report_configmap(cr, {"completed": 1})]
    assert sorted(by_name(objs)) == sorted([
        ("ConfigMap", "llm-spec"), ("NetworkPolicy", "llm-isolation"), ("Deployment", "llm-coordinator"),
        ("Service", "llm-coordinator"), ("Pod", "llm-replica-0"), ("Service", "llm-replica-0"), ("Pod", "llm-replica-1"),
        ("Service", "llm-replica-1"), ("Deployment", "llm-router"), ("Service", "llm-router"),
        ("Job", "llm-loadgen"), ("ConfigMap", "llm-report")])
    for o in objs:
        meta = o["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [{"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment",
                                            "name": "llm", "uid": "0b7c-uid", "controller": True,
                                            "blockOwnerDeletion": True}]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "revati"
        assert labels["app.kubernetes.io/instance"] == "llm"
        assert labels["revati.dev/deployment"] == "llm"
        assert labels["app.kubernetes.io/component"] in ("spec", "coordinator", "replica", "router", "loadgen",
                                                         "report", "isolation")


def test_no_gpu_or_extended_resource_anywhere(cr):
    tp4 = cr_from("examples/llama-70b-tp4-decode.yaml")
    for c_r in (cr, tp4):
        objs = mf.build_all(c_r, IMAGES)
        assert "nvidia.com" not in json.dumps(objs)
        for _, spec in pod_specs(objs):
            for c in containers(spec):
                res = c["resources"]
                assert set(res) == {"requests", "limits"}, c["name"]
                assert set(res["requests"]) == {"cpu", "memory"} == set(res["limits"]), c["name"]


def test_resources_are_sized_from_the_model_and_parallelism(cr):
    small = mf.engine_resources(mf.validate(cr))
    big = mf.engine_resources(mf.validate(cr_from("examples/llama-70b-tp4-decode.yaml")))

    def gib(q: str) -> float:
        return float(q[:-2]) / (1024 if q.endswith("Mi") else 1)

    assert int(big["requests"]["cpu"]) == 5 and int(small["requests"]["cpu"]) == 2  # API server + ranks
    assert gib(big["requests"]["memory"]) > 2 * gib(small["requests"]["memory"])
    for r in (small, big):
        assert gib(r["limits"]["memory"]) >= gib(r["requests"]["memory"])
        assert int(r["limits"]["cpu"]) >= int(r["requests"]["cpu"])
    # Host-backed weight shards: the shim backs allocations up to 64 MiB only.
    llama8b = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
    assert mf.backed_weight_bytes(llama8b) == 32 * (32 + 8 + 8 + 32) * 2**20  # q, k, v, o; MLP and embeddings virtual
    assert mf.backed_weight_bytes(llama8b, tp=8) > mf.backed_weight_bytes(llama8b) / 8  # MLP shards become backed


def test_pod_and_container_security_contexts(cr):
    for name, spec in pod_specs(mf.build_all(cr, IMAGES)):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, (name, c["name"])
            # The root filesystem is read-only: every writable path is an emptyDir.
            vols = {v["name"]: v for v in spec["volumes"]}
            for m in c.get("volumeMounts") or []:
                if not m.get("readOnly"):
                    assert "emptyDir" in vols[m["name"]], (name, c["name"], m)


def test_replica_pod_shim_sidecar_engine(cr):
    pod = mf.build_replica_pod(cr, 1, IMAGES)
    spec = pod["spec"]
    assert pod["metadata"]["name"] == "llm-replica-1"
    assert pod["metadata"]["labels"]["revati.dev/replica"] == "1"
    assert spec["restartPolicy"] == "Never"
    shim, sidecar = spec["initContainers"]
    assert shim["name"] == "shim" and shim["image"] == "m:1"
    assert shim["command"] == ["cp", "-a", "/opt/revati/shim/.", "/shim/"]
    assert shim["volumeMounts"] == [{"name": "shim", "mountPath": "/shim"}]
    assert sidecar["name"] == "sidecar" and sidecar["image"] == "s:1" and sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["revati", "sidecar", "--gpu", "h100-sxm", "--endpoint",
                                  "ipc:///run/revati/sidecar.sock", "--relay", "llm-coordinator:7070",
                                  "--relay-dir", "/run/revati", "--secret-file", "/etc/revati-secret/secret"]
    (engine,) = spec["containers"]
    assert engine["name"] == "engine" and engine["image"] == "r:1"
    assert engine["command"] == ["revati", "role", "replica", "--spec", "/etc/revati/spec.yaml", "--replica", "1",
                                 "--port", "8000"]
    e = env(engine)
    assert e["LD_PRELOAD"] == "/opt/revati/shim/librevati_shim.so"
    assert e["REVATI_SHIM_DIR"] == "/opt/revati/shim"
    assert e["REVATI_ACTIVE"] == "1" and e["REVATI_GPU"] == "h100-sxm" and e["REVATI_TIMEWARP"] == "1"
    assert e["REVATI_CLOCK"] == "/run/revati/clock"
    assert e["REVATI_SIDECAR"] == "ipc:///run/revati/sidecar.sock"
    assert e["REVATI_NODE_NAME"] == "llm-replica-1"
    assert engine["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert engine["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    mounts = {m["name"]: m["mountPath"] for m in engine["volumeMounts"]}
    assert mounts == {"shim": "/opt/revati/shim", "run": "/run/revati", "spec": "/etc/revati", "tmp": "/tmp",
                      "cache": "/home/revati/.cache"}
    side_mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert side_mounts["run"] == "/run/revati"
    # The relay reads the engine's threads in /proc (one pid namespace) with the shim's librevati_tk.so.
    assert side_mounts["shim"] == "/opt/revati/shim" and env(sidecar)["REVATI_SHIM_DIR"] == "/opt/revati/shim"
    assert spec["shareProcessNamespace"] is True
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["spec"] == {"name": "spec", "configMap": {"name": "llm-spec"}}
    assert all("emptyDir" in vols[v] for v in ("shim", "run", "tmp", "cache"))


def test_pod_env_is_the_one_builders_output(cr):
    """The operator renders revati.launch.env's builder (the one `revati run` uses) with the pod's
    paths; the replica role completes that environment without changing a value of the pod's."""
    from revati.launch.env import emulator_vars

    engine = mf.build_replica_pod(cr, 1, IMAGES)["spec"]["containers"][0]
    ev = emulator_vars("h100-sxm", shim="/opt/revati/shim", timewarp=True, clock="/run/revati/clock",
                       sidecar="ipc:///run/revati/sidecar.sock", node_name="llm-replica-1")
    assert engine["env"] == ev.pod_env() + [{"name": "HOME", "value": "/home/revati"},
                                            {"name": "PYTHONUNBUFFERED", "value": "1"}]
    pod = {k: v for k, v in env(engine).items()}
    assert ev.apply(pod) == pod


def test_timewarp_off_drops_the_variable():
    cr = cr_from("examples/default.yaml", name="wall")
    cr["spec"]["emulation"] = dict(cr["spec"]["emulation"], timewarp=False)
    assert "REVATI_TIMEWARP" not in env(mf.build_replica_pod(cr, 0, IMAGES)["spec"]["containers"][0])


def test_coordinator_router_loadgen_and_services(cr):
    objs = by_name(mf.build_all(cr, IMAGES))
    coord = objs[("Deployment", "llm-coordinator")]
    assert coord["spec"]["replicas"] == 1
    (cc,) = coord["spec"]["template"]["spec"]["containers"]
    assert cc["name"] == "coordinator" and cc["image"] == "r:1"
    assert cc["command"] == ["revati", "coordinator", "--listen", "0.0.0.0:7070",
                             "--secret-file", "/etc/revati-secret/secret"]
    fixed = copy.deepcopy(cr)
    fixed["spec"]["emulation"] = dict(fixed["spec"]["emulation"], dilation=2.5)
    assert mf.build_coordinator_deployment(fixed, IMAGES)["spec"]["template"]["spec"]["containers"][0][
        "command"][-2:] == ["--dilation", "2.5"]
    svc = objs[("Service", "llm-coordinator")]
    assert svc["spec"]["ports"] == [{"name": "timekeeper", "port": 7070, "targetPort": 7070, "protocol": "TCP"}]

    router = objs[("Deployment", "llm-router")]["spec"]["template"]["spec"]
    assert [c["name"] for c in router["initContainers"]] == ["shim", "sidecar"]
    (rc,) = router["containers"]
    assert rc["command"] == ["revati", "role", "router", "--port", "8000", "--backends",
                             "http://llm-replica-0:8000,http://llm-replica-1:8000"]
    assert env(rc)["REVATI_NODE_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env(rc)["LD_PRELOAD"] == "/opt/revati/shim/librevati_shim.so"

    job = objs[("Job", "llm-loadgen")]
    assert job["spec"]["backoffLimit"] == 0
    lspec = job["spec"]["template"]["spec"]
    assert lspec["restartPolicy"] == "Never"
    assert [c["name"] for c in lspec["initContainers"]] == ["shim", "sidecar"]
    (lc,) = lspec["containers"]
    assert lc["command"] == ["revati", "role", "loadgen", "--spec", "/etc/revati/spec.yaml", "--target",
                             "http://llm-router:8000"]

    # Every Service selects the pods it fronts; every Deployment selects its template.
    pod_labels = {k[1]: o["metadata"]["labels"] for k, o in objs.items() if k[0] == "Pod"}
    pod_labels["coordinator"] = coord["spec"]["template"]["metadata"]["labels"]
    pod_labels["router"] = objs[("Deployment", "llm-router")]["spec"]["template"]["metadata"]["labels"]
    for name, target in (("llm-replica-0", "llm-replica-0"), ("llm-replica-1", "llm-replica-1"),
                         ("llm-coordinator", "coordinator"), ("llm-router", "router")):
        sel = objs[("Service", name)]["spec"]["selector"]
        assert sel.items() <= pod_labels[target].items(), name
        others = [t for t in pod_labels if t != target]
        assert not any(sel.items() <= pod_labels[o].items() for o in others), name
    for d in ("llm-coordinator", "llm-router"):
        dep = objs[("Deployment", d)]["spec"]
        assert dep["selector"]["matchLabels"].items() <= dep["template"]["metadata"]["labels"].items()


def test_spec_configmap_is_the_run_spec(cr):
    cm = mf.build_spec_configmap(cr)
    spec = yaml.safe_load(cm["data"]["spec.yaml"])
    assert spec == {"apiVersion": "revati.dev/v1alpha1", "kind": "EmulatedDeployment",
                    "metadata": {"name": "llm", "namespace": "team-a"}, "spec": cr["spec"]}
    from revati.spec import spec_from_dict

    assert spec_from_dict(spec).spec.replicas == 2  # what `revati role` loads validates


def test_same_input_gives_identical_output_and_input_is_untouched(cr):
    before = copy.deepcopy(cr)
    a = json.dumps(mf.build_all(cr, IMAGES), sort_keys=False)
    b = json.dumps(mf.build_all(copy.deepcopy(cr), IMAGES), sort_keys=False)
    assert a == b
    assert cr == before
    # Key order of the input does not matter (the API server may reorder a map).
    shuffled = dict(reversed(list(cr.items())))
    shuffled["spec"] = dict(reversed(list(cr["spec"].items())))
    assert mf.build_spec_configmap(shuffled) == mf.build_spec_configmap(cr)


def test_images_come_from_the_environment(cr, monkeypatch):
    monkeypatch.setenv("REVATI_OPERATOR_RUNTIME_IMAGE", "reg.example/rt:9")
    monkeypatch.setenv("REVATI_OPERATOR_SIDECAR_IMAGE", "reg.example/sc:9")
    monkeypatch.setenv("REVATI_OPERATOR_SHIM_IMAGE", "reg.example/sh:9")
    pod = mf.build_replica_pod(cr, 0)
    assert [c["image"] for c in containers(pod["spec"])] == ["reg.example/sh:9", "reg.example/sc:9", "reg.example/rt:9"]
    monkeypatch.delenv("REVATI_OPERATOR_RUNTIME_IMAGE")
    assert mf.Images.from_env().runtime == mf.DEFAULT_IMAGES["runtime"] == "ghcr.io/revati-dev/revati-runtime:0.1.0"


def test_invalid_specs_are_rejected_naming_the_field(cr):
    bad = copy.deepcopy(cr)
    bad["spec"]["tensorParalelSize"] = 2
    bad["spec"]["workload"]["numPrompts"] = -1
    with pytest.raises(SpecError) as e:
        mf.build_all(bad, IMAGES)
    text = str(e.value)
    assert "spec.tensorParalelSize" in text and "spec.workload.numPrompts" in text
    long = copy.deepcopy(cr)
    long["metadata"]["name"] = "a" * 60
    with pytest.raises(SpecError, match="metadata.name: too long"):
        mf.validate(long)
    digit = copy.deepcopy(cr)
    digit["metadata"]["name"] = "9lives"
    with pytest.raises(SpecError, match="must start with a letter"):
        mf.validate(digit)


def test_report_parsing_and_status():
    assert mf.parse_report("a\nREVATI_REPORT {\"completed\": 1}\nREVATI_REPORT {\"completed\": 2}\ntail\n") == {
        "completed": 2}
    assert mf.parse_report("no report\n") is None
    assert mf.parse_report("REVATI_REPORT {not json\n") is None
    st = mf.status_from_report({"completed": 3, "failed": 1, "p50_ttft_ms": 1.5, "p90_ttft_ms": 2.0,
                                "p99_ttft_ms": 2.5, "p99_tpot_ms": float("nan"), "output_throughput": 10.0,
                                "emulation": {"virtual_s": 4.0, "wall_s": 8.0, "speedup": 0.5}})
    assert st == {"metrics": {"ttftMs": {"p50": 1.5, "p90": 2.0, "p99": 2.5},
                              "outputThroughput": 10.0, "completed": 3, "failed": 1},
                  "virtualSeconds": 4.0, "wallSeconds": 8.0, "speedup": 0.5}
    cm = mf.build_report_configmap({"metadata": {"name": "x", "namespace": "n", "uid": "u"}}, {"b": 1, "a": 2})
    assert cm["metadata"]["name"] == "x-report" and json.loads(cm["data"]["report.json"]) == {"a": 2, "b": 1}


def test_the_deployment_secret_is_mounted_only_where_the_clock_is_joined(cr):
    """The coordinator and each pod's relay sidecar read the Secret (owner-readable, 0440 with
    the pod's fsGroup); the engine, router and loadgen containers do not mount it."""
    import base64

    sec = mf.build_secret(cr)
    assert sec["kind"] == "Secret" and sec["metadata"]["name"] == "llm-secret"
    assert sec["metadata"]["ownerReferences"][0]["kind"] == "EmulatedDeployment"
    value = base64.b64decode(sec["data"]["secret"])
    assert len(value) == 64 and value != base64.b64decode(mf.build_secret(cr)["data"]["secret"])  # new each time
    assert base64.b64decode(mf.build_secret(cr, "x" * 32)["data"]["secret"]) == b"x" * 32
    mounted = set()
    for o in mf.build_all(cr, IMAGES):
        spec = o["spec"]["template"]["spec"] if o["kind"] in ("Deployment", "Job") else o.get("spec", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            if any(m["name"] == "secret" for m in c.get("volumeMounts", [])):
                assert {"name": "secret", "mountPath": "/etc/revati-secret", "readOnly": True} in c["volumeMounts"]
                mounted.add((o["metadata"]["name"], c["name"]))
                vol = [v for v in spec["volumes"] if v["name"] == "secret"]
                assert vol == [{"name": "secret", "secret": {"secretName": "llm-secret", "defaultMode": 0o440}}]
                assert spec["securityContext"]["fsGroup"] == 10001
    assert ("llm-coordinator", "coordinator") in mounted
    assert ("llm-replica-0", "sidecar") in mounted and ("llm-replica-1", "sidecar") in mounted
    assert not any(c in ("engine", "router", "loadgen") for _, c in mounted), mounted


def test_the_network_policy_admits_only_the_deployments_own_pods(cr, monkeypatch):
    objs = by_name(mf.build_all(cr, IMAGES))
    pol = objs[("NetworkPolicy", "llm-isolation")]
    spec = pol["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"] == {"matchLabels": {"revati.dev/deployment": "llm"},
                                   "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                         "values": ["coordinator", "replica"]}]}
    assert spec["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"revati.dev/deployment": "llm"}}}]}]
    # It selects the coordinator and replica pods, and every pod of the deployment matches its from.
    for (kind, name), o in objs.items():
        if kind in ("Pod", "Deployment", "Job"):
            lab = (o["spec"]["template"]["metadata"] if kind != "Pod" else o["metadata"])["labels"]
            assert lab["revati.dev/deployment"] == "llm"
            selected = lab["app.kubernetes.io/component"] in ("coordinator", "replica")
            assert selected == (name in ("llm-coordinator", "llm-replica-0", "llm-replica-1")), name
    monkeypatch.setenv("REVATI_OPERATOR_NETWORK_POLICY", "0")
    assert not any(k == "NetworkPolicy" for k, _ in by_name(mf.build_all(cr, IMAGES)))
