"""Pure builders: an EmulatedDeployment CR (a dict, as the API server returns it) -> manifests.

Nothing here talks to the API server. Every ``build_*`` function is deterministic (but
build_secret, whose value is new unless given, and which the reconcile creates once): the same
CR gives byte-identical output, which is what lets the handlers compare the desired object
with the live one and patch only on a difference (running the reconcile twice changes
nothing).

For a CR named ``<n>`` the operator owns, in the CR's namespace (see docs/kubernetes.md):

- ConfigMap ``<n>-spec`` (``spec.yaml``: the CR as a ``revati run`` spec);
- Secret ``<n>-secret`` (the deployment's secret, generated once: only the coordinator and the
  pods' relay sidecars mount it, and a relay joins the clock by proving it knows it);
- NetworkPolicy ``<n>-isolation`` (unless REVATI_OPERATOR_NETWORK_POLICY=0): only the
  deployment's own pods reach its coordinator and replica pods;
- Deployment + Service ``<n>-coordinator`` (the Timekeeper, TCP 7070);
- per replica ``i``: Pod + Service ``<n>-replica-<i>`` (the real vLLM under the shim);
- Deployment + Service ``<n>-router``;
- Job ``<n>-loadgen`` (created once every replica is Ready);
- ConfigMap ``<n>-report`` (``report.json``, written from the loadgen's last log line).

Every emulated container gets the shim from an init container (``shim`` image) copied into
an emptyDir, ``LD_PRELOAD`` and the emulator's ``REVATI_*`` environment, and a native
sidecar (``revati sidecar``) that predicts kernel times and relays the pod's clock to the
deployment's coordinator. Resources are CPU and memory only: no pod ever asks for a GPU.
"""

from __future__ import annotations

import base64
import math
import secrets
from dataclasses import dataclass
from typing import Any

import yaml

from revati import engines, envs
from revati.launch.env import emulator_vars
from revati.spec import API_VERSION, KIND, EmulatedDeployment, SpecError, spec_from_dict
from revati.spec.crds import status_from_report  # status fields of a report (also `revati sweep`)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "emulateddeployments"
SWEEP_KIND = "EmulationSweep"
SWEEP_PLURAL = "emulationsweeps"

DEFAULT_IMAGES = {
    "runtime": "ghcr.io/revati-dev/revati-runtime:0.1.0",
    "sidecar": "ghcr.io/revati-dev/revati-sidecar:0.1.0",
    "shim": "ghcr.io/revati-dev/revati-shim:0.1.0",
}

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "revati.dev/deployment"
LABEL_REPLICA = "revati.dev/replica"

COORDINATOR_PORT = 7070
HTTP_PORT = 8000
RUN_DIR = "/run/revati"
SHIM_DIR = "/opt/revati/shim"
SPEC_DIR = "/etc/revati"
SIDECAR_ENDPOINT = f"ipc://{RUN_DIR}/sidecar.sock"
SECRET_DIR = "/etc/revati-secret"
SECRET_KEY = "secret"
SECRET_FILE = f"{SECRET_DIR}/{SECRET_KEY}"
RUN_AS_USER = 10001

#: Prefix of the loadgen's last stdout line: ``REVATI_REPORT <compact report JSON>``.
REPORT_PREFIX = "REVATI_REPORT "

_MIB = 1024 * 1024
_GIB = 1024 * _MIB
#: Device allocations up to this size are host-backed by the shim (REVATI_BACKED_MAX default);
#: larger ones are virtual and cost no host memory.
_BACKED_MAX = 64 * _MIB


@dataclass(frozen=True)
class Images:
    runtime: str
    sidecar: str
    shim: str

    @classmethod
    def from_env(cls) -> "Images":
        """Images from REVATI_OPERATOR_{RUNTIME,SIDECAR,SHIM}_IMAGE, else the release defaults."""
        return cls(
            runtime=envs.get("REVATI_OPERATOR_RUNTIME_IMAGE") or DEFAULT_IMAGES["runtime"],
            sidecar=envs.get("REVATI_OPERATOR_SIDECAR_IMAGE") or DEFAULT_IMAGES["sidecar"],
            shim=envs.get("REVATI_OPERATOR_SHIM_IMAGE") or DEFAULT_IMAGES["shim"],
        )

    def runtime_for(self, spec: EmulatedDeployment) -> str:
        """The runtime image of the spec's engine version: the runtime image itself for the
        default version, else its tag suffixed `-<engine><version>` (images/runtime.Dockerfile
        built with --build-arg ENGINE_VERSION=<version>, which holds that version's environment)."""
        e = spec.spec.engine
        # NOTE: the runtime image holds the default engine only; another engine (sglang) at its
        # default version still needs its own image
        if e.name == engines.DEFAULT_ENGINE and e.version == engines.get(e.name).version:
            return self.runtime
        repo, sep, tag = self.runtime.rpartition(":")
        if not sep or "/" in tag:  # no tag: latest
            repo, tag = self.runtime, "latest"
        return f"{repo}:{tag}-{e.name}{e.version}"


# --- names -------------------------------------------------------------------------------

def spec_configmap_name(n: str) -> str:
    return f"{n}-spec"


def report_configmap_name(n: str) -> str:
    return f"{n}-report"


def coordinator_name(n: str) -> str:
    return f"{n}-coordinator"


def secret_name(n: str) -> str:
    return f"{n}-secret"


def network_policy_name(n: str) -> str:
    return f"{n}-isolation"


def replica_name(n: str, i: int) -> str:
    return f"{n}-replica-{i}"


def router_name(n: str) -> str:
    return f"{n}-router"


def loadgen_name(n: str) -> str:
    return f"{n}-loadgen"


# --- validation --------------------------------------------------------------------------

def run_spec_dict(cr: dict) -> dict:
    """The CR as a ``revati run`` spec: apiVersion/kind/metadata(name, namespace)/spec.

    Server-side metadata (uid, resourceVersion, annotations, ...) is not part of a run spec."""
    meta = cr.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    return {"apiVersion": cr.get("apiVersion", API_VERSION), "kind": cr.get("kind", KIND),
            "metadata": out_meta, "spec": cr.get("spec")}


#: Service names are DNS-1035 labels: at most 63 characters, starting with a letter.
_SERVICE_NAME_MAX = 63


def validate(cr: dict) -> EmulatedDeployment:
    """Validates the CR's spec with the same models as ``revati run``, and that the names of
    its objects are valid Service names. Raises SpecError."""
    name = (cr.get("metadata") or {}).get("name", "<unnamed>")
    source = f"EmulatedDeployment {name}"
    model = spec_from_dict(run_spec_dict(cr), source=source)
    longest = max([coordinator_name(name), router_name(name), loadgen_name(name),
                   replica_name(name, model.spec.replicas - 1)], key=len)
    problems = []
    if len(longest) > _SERVICE_NAME_MAX:
        problems.append(f"metadata.name: too long: the object name {longest!r} would have {len(longest)} "
                        f"characters, more than {_SERVICE_NAME_MAX}; use at most "
                        f"{_SERVICE_NAME_MAX - (len(longest) - len(name))} characters")
    if not name[:1].isalpha():
        problems.append("metadata.name: must start with a letter (the operator names Services after it)")
    if problems:
        raise SpecError(source, problems)
    return model


def _model(cr: dict | EmulatedDeployment) -> EmulatedDeployment:
    return cr if isinstance(cr, EmulatedDeployment) else validate(cr)


# --- common pieces -----------------------------------------------------------------------

def labels(n: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: "revati",
        LABEL_INSTANCE: n,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: "revati-operator",
        LABEL_DEPLOYMENT: n,
    }


def selector_labels(n: str, component: str) -> dict[str, str]:
    return {LABEL_NAME: "revati", LABEL_INSTANCE: n, LABEL_COMPONENT: component}


def owner_reference(cr: dict) -> dict:
    meta = cr["metadata"]
    return {
        "apiVersion": cr.get("apiVersion", API_VERSION),
        "kind": cr.get("kind", KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(cr: dict, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict:
    meta = cr["metadata"]
    lab = labels(meta["name"], component)
    lab.update(extra_labels or {})
    out = {"name": name, "labels": lab, "ownerReferences": [owner_reference(cr)]}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    return out


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _quantity_mib(nbytes: float) -> str:
    """Canonical form (as the API server prints it back), so a live object compares equal."""
    mib = int(math.ceil(nbytes / _MIB))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _quantity_cpu(cores: float) -> str:
    milli = int(math.ceil(cores * 1000))
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _resources(cpu_request: float, mem_request_bytes: float, cpu_limit: float | None = None,
               mem_limit_bytes: float | None = None) -> dict:
    """CPU and memory only. Never nvidia.com/gpu or any other extended resource."""
    return {
        "requests": {"cpu": _quantity_cpu(cpu_request), "memory": _quantity_mib(mem_request_bytes)},
        "limits": {"cpu": _quantity_cpu(cpu_limit if cpu_limit is not None else 2 * cpu_request),
                   "memory": _quantity_mib(mem_limit_bytes if mem_limit_bytes is not None
                                           else mem_request_bytes * 1.5)},
    }


def backed_weight_bytes(model_config: dict, tp: int = 1, pp: int = 1) -> int:
    """Host memory the dummy weights of ONE rank take under the shim.

    vLLM loads dummy weights; the shim backs device allocations up to 64 MiB with host memory
    and keeps larger ones virtual. So a rank costs the sum of its per-layer weight shards that
    are at most 64 MiB (bf16), over its layers, plus the embedding and LM-head shards if small.
    An estimate from config.json (dense Llama-like layout; MoE experts count as one MLP)."""
    h = int(model_config.get("hidden_size") or 4096)
    inter = int(model_config.get("intermediate_size") or 4 * h)
    layers = int(model_config.get("num_hidden_layers") or 32)
    heads = int(model_config.get("num_attention_heads") or max(1, h // 128))
    kv_heads = int(model_config.get("num_key_value_heads") or heads)
    vocab = int(model_config.get("vocab_size") or 32000)
    head_dim = int(model_config.get("head_dim") or h // heads)
    b = 2  # bf16
    shards = [
        h * (heads * head_dim) // tp,        # q
        2 * h * (kv_heads * head_dim) // tp,  # k, v
        (heads * head_dim) // tp * h,        # o
        2 * h * inter // tp,                 # gate, up
        inter // tp * h,                     # down
    ]
    per_layer = sum(s * b for s in shards if s * b <= _BACKED_MAX)
    total = per_layer * math.ceil(layers / pp)
    emb = vocab * h // tp * b
    if emb <= _BACKED_MAX:
        total += 2 * emb
    return int(total)


def engine_resources(model: EmulatedDeployment) -> dict:
    """The engine container's CPU/memory: one core for the API server plus one per rank;
    about 1.5 GiB per process (Python, torch, vLLM) plus the host-backed weight shards."""
    s = model.spec
    ranks = s.tensorParallelSize * s.pipelineParallelSize
    try:
        from revati import models

        weights = backed_weight_bytes(models.model_config(s.model), s.tensorParallelSize,
                                      s.pipelineParallelSize)
    except Exception:  # noqa: BLE001 - a config that cannot be read: size for a 8B-class model
        weights = 2 * _GIB
    mem = 2 * _GIB + ranks * (1.5 * _GIB + weights)
    return _resources(1 + ranks, mem, cpu_limit=2 * (1 + ranks), mem_limit_bytes=mem * 1.5)


SIDECAR_RESOURCES = _resources(0.5, 1 * _GIB, cpu_limit=1, mem_limit_bytes=2 * _GIB)
SHIM_RESOURCES = _resources(0.05, 64 * _MIB, cpu_limit=0.2, mem_limit_bytes=128 * _MIB)
COORDINATOR_RESOURCES = _resources(0.25, 256 * _MIB, cpu_limit=1, mem_limit_bytes=512 * _MIB)
ROUTER_RESOURCES = _resources(0.5, 512 * _MIB, cpu_limit=1, mem_limit_bytes=1 * _GIB)
LOADGEN_RESOURCES = _resources(1, 1 * _GIB, cpu_limit=2, mem_limit_bytes=2 * _GIB)


def emulator_env(model: EmulatedDeployment, node_name: str | None) -> list[dict]:
    """LD_PRELOAD and the REVATI_* variables of an emulated process tree: revati.launch.env's
    builder (the one `revati run` uses), with the pod's paths, rendered as an env list.

    node_name None: the pod's own name through the downward API (pods of Deployments/Jobs)."""
    s = model.spec
    ev = emulator_vars(s.gpu, shim=SHIM_DIR, engine=engines.get(s.engine.name, s.engine.version),
                       timewarp=s.emulation.timewarp, clock=f"{RUN_DIR}/clock", sidecar=SIDECAR_ENDPOINT,
                       node_name=node_name or "(downward API)")
    refs = {"REVATI_NODE_NAME": "metadata.name"} if node_name is None else {}
    return ev.pod_env(refs) + [
        {"name": "HOME", "value": "/home/revati"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _volume_mounts(with_spec: bool) -> list[dict]:
    mounts = [
        {"name": "shim", "mountPath": SHIM_DIR, "readOnly": True},
        {"name": "run", "mountPath": RUN_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/home/revati/.cache"},
    ]
    if with_spec:
        mounts.append({"name": "spec", "mountPath": SPEC_DIR, "readOnly": True})
    return mounts


def _volumes(n: str) -> list[dict]:
    return [
        {"name": "shim", "emptyDir": {}},
        {"name": "run", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "spec", "configMap": {"name": spec_configmap_name(n)}},
        # 0440 with the pod's fsGroup: the revati user reads it, nobody else.
        {"name": "secret", "secret": {"secretName": secret_name(n), "defaultMode": 0o440}},
    ]


_SECRET_MOUNT = {"name": "secret", "mountPath": SECRET_DIR, "readOnly": True}


def _shim_init(images: Images) -> dict:
    return {
        "name": "shim",
        "image": images.shim,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-a", f"{SHIM_DIR}/.", "/shim/"],
        "volumeMounts": [{"name": "shim", "mountPath": "/shim"}],
        "resources": SHIM_RESOURCES,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _sidecar(model: EmulatedDeployment, n: str, images: Images) -> dict:
    """Native sidecar (an init container with restartPolicy Always): the pod's predictor and its
    relay to the deployment's coordinator; it creates the clock page the shim reads."""
    return {
        "name": "sidecar",
        "image": images.sidecar,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["revati", "sidecar", "--gpu", model.spec.gpu, "--endpoint", SIDECAR_ENDPOINT,
                    "--relay", f"{coordinator_name(n)}:{COORDINATOR_PORT}", "--relay-dir", RUN_DIR,
                    "--secret-file", SECRET_FILE],
        # REVATI_SHIM_DIR: the relay reads thread states with the shim folder's librevati_tk.so.
        "env": [{"name": "HOME", "value": "/home/revati"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "REVATI_SHIM_DIR", "value": SHIM_DIR}],
        "volumeMounts": [
            {"name": "shim", "mountPath": SHIM_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/home/revati/.cache"},
            _SECRET_MOUNT,
        ],
        # The main container starts once the clock page exists (the relay reached the coordinator).
        "startupProbe": {"exec": {"command": ["test", "-e", f"{RUN_DIR}/clock"]},
                         "periodSeconds": 1, "failureThreshold": 600},
        "resources": SIDECAR_RESOURCES,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _emulated_pod_spec(model: EmulatedDeployment, n: str, images: Images, container: dict,
                       restart_policy: str) -> dict:
    return {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        # The relay in the sidecar container decides quiescence from the emulated processes'
        # threads in /proc (and the shim says its pid): one pid namespace for the pod.
        "shareProcessNamespace": True,
        "initContainers": [_shim_init(images), _sidecar(model, n, images)],
        "containers": [container],
        "volumes": _volumes(n),
    }


def _container(name: str, image: str, command: list[str], env: list[dict], resources: dict,
               with_spec: bool, ports: list[dict] | None = None) -> dict:
    c = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "volumeMounts": _volume_mounts(with_spec),
        "resources": resources,
        "securityContext": container_security_context(),
        # The emulator's own message (e.g. a time-warp deadlock) becomes the pod's condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        c["ports"] = ports
    return c


def _service(cr: dict, name: str, component: str, port: int, port_name: str,
             selector: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cr, name, component),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


# --- builders ----------------------------------------------------------------------------

def build_spec_configmap(cr: dict) -> dict:
    """ConfigMap <n>-spec: spec.yaml is the CR as a `revati run` spec."""
    _model(cr)
    n = cr["metadata"]["name"]
    text = yaml.safe_dump(run_spec_dict(cr), sort_keys=True, default_flow_style=False)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(cr, spec_configmap_name(n), "spec"),
            "data": {"spec.yaml": text}}


def build_secret(cr: dict, value: str | None = None) -> dict:
    """Secret <n>-secret: the deployment's secret (a new random one unless value is given), that
    relays prove they know to join its clock (revati/timekeeper/auth.py). Created once: the
    reconcile never replaces the value of an existing one (kube.ensure)."""
    n = cr["metadata"]["name"]
    value = value or secrets.token_hex(32)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _metadata(cr, secret_name(n), "secret"),
            "data": {SECRET_KEY: base64.b64encode(value.encode()).decode()}}


def build_network_policy(cr: dict) -> dict:
    """NetworkPolicy <n>-isolation: the deployment's coordinator and replica pods accept
    connections only from the deployment's own pods (the router, the load generator, the
    replicas' relays; docs/security.md). The router stays reachable for a user's own requests.

    NOTE: per deployment, from the operator, not a static chart template: a policy cannot match
    "the same revati.dev/deployment value as the target", and policies add up (an allow in any
    one of them opens the pod), so one namespace-wide policy could not keep deployments apart."""
    n = cr["metadata"]["name"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(cr, network_policy_name(n), "isolation"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_DEPLOYMENT: n},
                            "matchExpressions": [{"key": LABEL_COMPONENT, "operator": "In",
                                                  "values": ["coordinator", "replica"]}]},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {LABEL_DEPLOYMENT: n}}}]}],
        },
    }


def network_policy_enabled() -> bool:
    return (envs.get("REVATI_OPERATOR_NETWORK_POLICY") or "1").strip().lower() not in ("0", "false", "no", "off")


def build_coordinator_deployment(cr: dict, images: Images | None = None) -> dict:
    images = images or Images.from_env()
    model = _model(cr)
    n = cr["metadata"]["name"]
    sel = selector_labels(n, "coordinator")
    command = ["revati", "coordinator", "--listen", f"0.0.0.0:{COORDINATOR_PORT}", "--secret-file", SECRET_FILE]
    if model.spec.emulation.dilation != "auto":  # a fixed dilation: CPU time counts 1/dilation
        command += ["--dilation", str(model.spec.emulation.dilation)]
    container = _container(
        "coordinator", images.runtime, command,
        [{"name": "HOME", "value": "/home/revati"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        COORDINATOR_RESOURCES, with_spec=True,
        ports=[{"name": "timekeeper", "containerPort": COORDINATOR_PORT, "protocol": "TCP"}])
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "shim"] + [_SECRET_MOUNT]
    container["readinessProbe"] = {"tcpSocket": {"port": COORDINATOR_PORT}, "periodSeconds": 2}
    pod_labels = labels(n, "coordinator")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cr, coordinator_name(n), "coordinator"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": sel},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [v for v in _volumes(n) if v["name"] != "shim"],
                },
            },
        },
    }


def build_coordinator_service(cr: dict) -> dict:
    n = cr["metadata"]["name"]
    return _service(cr, coordinator_name(n), "coordinator", COORDINATOR_PORT, "timekeeper",
                    selector_labels(n, "coordinator"))


def build_replica_pod(cr: dict, i: int, images: Images | None = None) -> dict:
    images = images or Images.from_env()
    model = _model(cr)
    n = cr["metadata"]["name"]
    name = replica_name(n, i)
    engine = _container(
        "engine", images.runtime_for(model),
        ["revati", "role", "replica", "--spec", f"{SPEC_DIR}/spec.yaml", "--replica", str(i),
         "--port", str(HTTP_PORT)],
        emulator_env(model, name), engine_resources(model), with_spec=True,
        ports=[{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}])
    health = engines.get(model.spec.engine.name, model.spec.engine.version).health_path
    engine["readinessProbe"] = {"httpGet": {"path": health, "port": HTTP_PORT},
                                "periodSeconds": 5, "failureThreshold": 3}
    engine["startupProbe"] = {"httpGet": {"path": health, "port": HTTP_PORT},
                              "periodSeconds": 5, "failureThreshold": 360}
    meta = _metadata(cr, name, "replica", {LABEL_REPLICA: str(i)})
    spec = _emulated_pod_spec(model, n, images, engine, "Never")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def build_replica_service(cr: dict, i: int) -> dict:
    n = cr["metadata"]["name"]
    sel = dict(selector_labels(n, "replica"), **{LABEL_REPLICA: str(i)})
    return _service(cr, replica_name(n, i), "replica", HTTP_PORT, "http", sel)


def build_router_deployment(cr: dict, images: Images | None = None) -> dict:
    images = images or Images.from_env()
    model = _model(cr)
    n = cr["metadata"]["name"]
    backends = ",".join(f"http://{replica_name(n, i)}:{HTTP_PORT}" for i in range(model.spec.replicas))
    router = _container(
        "router", images.runtime, ["revati", "role", "router", "--port", str(HTTP_PORT), "--backends", backends],
        emulator_env(model, None), ROUTER_RESOURCES, with_spec=False,
        ports=[{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}])
    router["readinessProbe"] = {"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 2}
    sel = selector_labels(n, "router")
    pod_spec = _emulated_pod_spec(model, n, images, router, "Always")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cr, router_name(n), "router"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": sel},
            "template": {"metadata": {"labels": labels(n, "router")}, "spec": pod_spec},
        },
    }


def build_router_service(cr: dict) -> dict:
    n = cr["metadata"]["name"]
    return _service(cr, router_name(n), "router", HTTP_PORT, "http", selector_labels(n, "router"))


def build_loadgen_job(cr: dict, images: Images | None = None) -> dict:
    """Job <n>-loadgen: runs the workload against the router; its LAST stdout line is
    `REVATI_REPORT <compact report JSON>`. backoffLimit 0: an emulation is not retried."""
    images = images or Images.from_env()
    model = _model(cr)
    n = cr["metadata"]["name"]
    loadgen = _container(
        "loadgen", images.runtime_for(model),
        ["revati", "role", "loadgen", "--spec", f"{SPEC_DIR}/spec.yaml", "--target",
         f"http://{router_name(n)}:{HTTP_PORT}"],
        emulator_env(model, None), LOADGEN_RESOURCES, with_spec=True)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(cr, loadgen_name(n), "loadgen"),
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": labels(n, "loadgen")},
                "spec": _emulated_pod_spec(model, n, images, loadgen, "Never"),
            },
        },
    }


def build_report_configmap(cr: dict, report: dict) -> dict:
    """ConfigMap <n>-report: report.json as the loadgen printed it (sorted keys)."""
    import json

    n = cr["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(cr, report_configmap_name(n), "report"),
            "data": {"report.json": json.dumps(report, sort_keys=True, indent=2)}}


def build_serving(cr: dict, images: Images | None = None) -> list[dict]:
    """Everything the operator creates first, in creation order (the Job and report come later)."""
    images = images or Images.from_env()
    model = _model(cr)
    out = [build_spec_configmap(cr)]  # (and the Secret, build_secret: created once, not rebuilt)
    if network_policy_enabled():
        out.append(build_network_policy(cr))
    out += [build_coordinator_deployment(cr, images), build_coordinator_service(cr)]
    for i in range(model.spec.replicas):
        out += [build_replica_pod(cr, i, images), build_replica_service(cr, i)]
    out += [build_router_deployment(cr, images), build_router_service(cr)]
    return out


def build_all(cr: dict, images: Images | None = None) -> list[dict]:
    """Every object of a run except the report ConfigMap (which needs the report)."""
    images = images or Images.from_env()
    return build_serving(cr, images) + [build_loadgen_job(cr, images)]


# --- results -----------------------------------------------------------------------------

def parse_report(log: str) -> dict | None:
    """The report from the loadgen's log: the LAST line starting with `REVATI_REPORT `."""
    import json

    for line in reversed((log or "").splitlines()):
        line = line.strip()
        if line.startswith(REPORT_PREFIX):
            try:
                out = json.loads(line[len(REPORT_PREFIX):])
            except ValueError:
                return None
            return out if isinstance(out, dict) else None
    return None


def gpu_count(model: EmulatedDeployment) -> int:
    s = model.spec
    return s.tensorParallelSize * s.pipelineParallelSize * s.replicas


__all__ = [
    "DEFAULT_IMAGES", "GROUP", "Images", "PLURAL", "REPORT_PREFIX", "SpecError", "VERSION",
    "backed_weight_bytes", "build_all", "build_coordinator_deployment", "build_coordinator_service",
    "build_network_policy", "build_secret", "network_policy_enabled", "network_policy_name", "secret_name",
    "build_loadgen_job", "build_replica_pod", "build_replica_service", "build_report_configmap",
    "build_router_deployment", "build_router_service", "build_serving", "build_spec_configmap",
    "engine_resources", "gpu_count", "labels", "owner_reference", "parse_report", "status_from_report",
    "validate",
]
