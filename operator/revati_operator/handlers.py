"""kopf handlers of the revati operator: `kopf run --standalone -m revati.operator.handlers`.

EmulatedDeployment
  A reconcile reads the CR fresh, validates its spec (revati.spec.spec_from_dict: a bad spec
  ends in phase Failed with a condition naming the fields), creates or adopts the objects of
  revati.operator.manifests (create-or-patch by name: an object that already matches is left
  alone, so running the reconcile twice changes nothing) and moves the phase ONE step:

      (none) -> Pending -> Starting -> Running -> Succeeded
                                   \\-> Failed (from any of them)

  Pending: accepted, spec valid. Starting: the spec ConfigMap, coordinator, replica pods and
  router exist (created only once the CR carries the operator's finalizer, so that a deletion
  always runs the cleanup). Running: every replica pod is Ready; the loadgen Job is created with this
  step. Succeeded: the Job succeeded; the loadgen pod's last `REVATI_REPORT {json}` log line
  goes to ConfigMap <n>-report and the status (metrics, virtualSeconds, speedup). Failed: a pod
  failed or a container terminated with a non-zero code (reason EmulatedDeadlock when the
  emulator says deadlock or exits with code 3, else PodFailed), the Job failed
  (LoadgenFailed), the report is missing (NoReport), or the spec is invalid (InvalidSpec);
  the condition carries the container's termination message.

  Reconciles run on create/resume (with kopf's retries: temporary API errors raise
  kopf.TemporaryError), on every event of the CR (so each step triggers the next), on events
  of its pods and Job (label revati.dev/deployment), and on a slow timer as a safety net.
  Reconciles of one CR are serialized by a lock. Deletion: the children carry owner
  references (the garbage collector removes them); the delete handler (a finalizer) also
  deletes them explicitly, so deletion cleans up even without a garbage collector.

EmulationSweep
  Validated with revati.spec.sweep, expanded into child EmulatedDeployments `<sweep>-<i>`
  (owned by the sweep, label revati.dev/sweep), at most spec.maxParallel unfinished at a time;
  children's status events trigger the next ones and the ranking (revati.spec.sweep.rank) in
  the sweep's status. Pending -> Running -> Succeeded when every child finished.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from revati import envs
from revati.operator import manifests as mf
from revati.spec import SpecError

GROUP, VERSION = mf.GROUP, mf.VERSION
EMD = mf.PLURAL
EMS = mf.SWEEP_PLURAL
FINALIZER = "revati.dev/cleanup"
TERMINAL = ("Succeeded", "Failed")
SWEEP_LABEL = "revati.dev/sweep"
#: Exit code of an emulated process that the time warp declared deadlocked.
DEADLOCK_EXIT_CODE = 3

_log = logging.getLogger("revati.operator")


def _resync_seconds() -> float:
    try:
        return max(1.0, float(envs.get("REVATI_OPERATOR_RESYNC_SECONDS") or 30))
    except ValueError:
        return 30.0


# --- the API client ----------------------------------------------------------------------

class NotFound(Exception):
    pass


_KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("CoreV1Api", "config_map"),
    "Service": ("CoreV1Api", "service"),
    "Pod": ("CoreV1Api", "pod"),
    "Deployment": ("AppsV1Api", "deployment"),
    "Job": ("BatchV1Api", "job"),
}
#: Kinds whose spec cannot change after creation: only their metadata is reconciled.
_IMMUTABLE_SPEC = ("Pod", "Job")
MERGE = "application/merge-patch+json"


class Kube:
    """Thin dict-in, dict-out wrapper over the official client (raw JSON, no model classes)."""

    def __init__(self, api: kubernetes.client.ApiClient):
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self._apis = {n: getattr(kubernetes.client, n)(api) for n in ("CoreV1Api", "AppsV1Api", "BatchV1Api")}

    @staticmethod
    def _json(fn: Callable, *args, **kwargs) -> Any:
        try:
            resp = fn(*args, _preload_content=False, **kwargs)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(str(e.reason)) from None
            raise
        data = resp.data
        return json.loads(data) if data else {}

    def _fn(self, kind: str, verb: str) -> Callable:
        api, suffix = _KINDS[kind]
        return getattr(self._apis[api], f"{verb}_namespaced_{suffix}")

    def read(self, kind: str, ns: str, name: str) -> dict | None:
        try:
            return self._json(self._fn(kind, "read"), name, ns)
        except NotFound:
            return None

    def create(self, kind: str, ns: str, body: dict) -> dict:
        return self._json(self._fn(kind, "create"), ns, body)

    def patch(self, kind: str, ns: str, name: str, body: dict) -> dict:
        return self._json(self._fn(kind, "patch"), name, ns, body, _content_type=MERGE)

    def delete(self, kind: str, ns: str, name: str) -> bool:
        try:
            self._json(self._fn(kind, "delete"), name, ns, propagation_policy="Background")
            return True
        except NotFound:
            return False

    def list(self, kind: str, ns: str, selector: str) -> list[dict]:
        return self._json(self._fn(kind, "list"), ns, label_selector=selector).get("items") or []

    def pod_log(self, ns: str, name: str, container: str) -> str:
        resp = self.core.read_namespaced_pod_log(name, ns, container=container, _preload_content=False)
        return resp.data.decode("utf-8", "replace")

    # custom resources
    def get_cr(self, plural: str, ns: str, name: str) -> dict | None:
        try:
            return self._json(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name)
        except NotFound:
            return None

    def list_cr(self, plural: str, ns: str, selector: str) -> list[dict]:
        return self._json(self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural,
                          label_selector=selector).get("items") or []

    def create_cr(self, plural: str, ns: str, body: dict) -> dict:
        return self._json(self.custom.create_namespaced_custom_object, GROUP, VERSION, ns, plural, body)

    def delete_cr(self, plural: str, ns: str, name: str) -> bool:
        try:
            self._json(self.custom.delete_namespaced_custom_object, GROUP, VERSION, ns, plural, name)
            return True
        except NotFound:
            return False

    def patch_cr_status(self, plural: str, ns: str, name: str, status: dict) -> dict:
        return self._json(self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, ns, plural, name,
                          {"status": status}, _content_type=MERGE)


_kube: Kube | None = None
_kube_guard = threading.Lock()


def _load_client() -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    else:
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)
    return kubernetes.client.ApiClient(cfg)


def kube() -> Kube:
    global _kube
    with _kube_guard:
        if _kube is None:
            _kube = Kube(_load_client())
        return _kube


# --- helpers -----------------------------------------------------------------------------

_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(*key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())  # type: ignore[arg-type]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_subset(desired: Any, live: Any) -> bool:
    """Whether every field of desired is in live with the same value (lists: same length,
    item by item). Fields the API server adds (defaults, clusterIP, status) are ignored."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            is_subset(a, b) for a, b in zip(desired, live))
    return desired == live


def ensure(k: Kube, obj: dict, logger: logging.Logger | None = None) -> tuple[dict, str]:
    """Create-or-patch by name. Returns (live object, "created" | "patched" | "unchanged").

    An object that exists already is adopted: its labels and owner references are set. Pods and
    Jobs only get their metadata reconciled (their specs are immutable)."""
    kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
    live = k.read(kind, ns, name)
    if live is None:
        try:
            created = k.create(kind, ns, obj)
            (logger or _log).info(f"created {kind} {name}")
            return created, "created"
        except ApiException as e:
            if e.status != 409:
                raise
            live = k.read(kind, ns, name)
            if live is None:
                raise kopf.TemporaryError(f"{kind} {name} exists and does not: retrying", delay=1) from None
    desired = {"metadata": obj["metadata"]} if kind in _IMMUTABLE_SPEC else obj
    if is_subset(desired, live):
        return live, "unchanged"
    patched = k.patch(kind, ns, name, desired)
    (logger or _log).info(f"patched {kind} {name} (adopted or drifted)")
    return patched, "patched"


def upsert_condition(conditions: list[dict], ctype: str, status: str, reason: str, message: str) -> list[dict]:
    """conditions with `ctype` set; lastTransitionTime changes only when status does."""
    out = [dict(c) for c in conditions or []]
    for c in out:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = _now()
            c.update(status=status, reason=reason, message=message)
            return out
    out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": _now()})
    return out


def _post(body: dict, kind: str, reason: str, message: str) -> None:
    try:
        (kopf.warning if kind == "warning" else kopf.info)(body, reason=reason, message=message[:1000])
    except Exception:  # noqa: BLE001 - an event is a courtesy; never fail a reconcile over it
        pass


def _pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_failure(pod: dict) -> tuple[str, str] | None:
    """(reason, message) if the pod failed or one of its containers terminated non-zero."""
    name = pod["metadata"]["name"]
    st = pod.get("status") or {}
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        for state_key in ("state", "lastState"):
            term = (cs.get(state_key) or {}).get("terminated")
            if not term or int(term.get("exitCode") or 0) == 0:
                continue
            code = int(term.get("exitCode"))
            text = (term.get("message") or "").strip()
            if len(text) > 2000:  # a log tail (FallbackToLogsOnError): its end says most
                text = "..." + text[-2000:]
            why = term.get("reason") or "Error"
            if code == DEADLOCK_EXIT_CODE or "deadlock" in text.lower():
                reason = "EmulatedDeadlock"
            elif why == "OOMKilled":
                reason = "OOMKilled"
            else:
                reason = "PodFailed"
            msg = f"pod {name}: container {cs.get('name')} terminated with exit code {code} ({why})"
            return reason, msg + (f": {text}" if text else "")
    if st.get("phase") == "Failed":
        text = st.get("message") or st.get("reason") or "the pod failed"
        reason = "EmulatedDeadlock" if "deadlock" in text.lower() else "PodFailed"
        return reason, f"pod {name} failed: {text}"
    return None


# --- EmulatedDeployment ------------------------------------------------------------------

class _Step:
    """The status patch of one reconcile step."""

    def __init__(self, cr: dict):
        self.cr = cr
        self.status = dict(cr.get("status") or {})
        self.patch: dict[str, Any] = {}

    def phase(self, phase: str, reason: str, message: str, event: str = "info") -> None:
        self.patch["phase"] = phase
        self.patch["observedGeneration"] = self.cr["metadata"].get("generation")
        if phase == "Failed":
            self.condition("Failed", "True", reason, message)
            self.condition("Ready", "False", reason, message)
        elif phase == "Succeeded":
            self.condition("Ready", "True", reason, message)
        else:
            self.condition("Ready", "False", reason, message)
        _post(self.cr, event if phase != "Failed" else "warning", reason, f"{phase}: {message}")

    def condition(self, ctype: str, status: str, reason: str, message: str) -> None:
        conds = self.patch.get("conditions", self.status.get("conditions") or [])
        self.patch["conditions"] = upsert_condition(conds, ctype, status, reason, message)

    def commit(self, k: Kube) -> None:
        if not self.patch or is_subset(self.patch, self.status):
            return
        ns, name = self.cr["metadata"]["namespace"], self.cr["metadata"]["name"]
        k.patch_cr_status(EMD, ns, name, self.patch)


def _component_pods(k: Kube, ns: str, n: str) -> list[dict]:
    sel = f"{mf.LABEL_DEPLOYMENT}={n},{mf.LABEL_INSTANCE}={n}"
    return k.list("Pod", ns, sel)


def _is_loadgen(pod: dict) -> bool:
    return (pod["metadata"].get("labels") or {}).get(mf.LABEL_COMPONENT) == "loadgen"


def _read_report(k: Kube, ns: str, pod: dict) -> dict | None:
    try:
        return mf.parse_report(k.pod_log(ns, pod["metadata"]["name"], "loadgen"))
    except ApiException:
        return None


def _keep_report(k: Kube, step: "_Step", cr: dict, report: dict, logger: logging.Logger) -> None:
    """ConfigMap <n>-report and the status fields from a report."""
    ensure(k, mf.build_report_configmap(cr, report), logger)
    step.patch.update(mf.status_from_report(report))
    step.patch["reportConfigMap"] = mf.report_configmap_name(cr["metadata"]["name"])


def _fail(k: Kube, step: "_Step", cr: dict, pod: dict | None, reason: str, message: str,
          logger: logging.Logger) -> str:
    """Phase Failed. A failed loadgen pod may still have printed its report (it exits 1 when
    requests failed): the report is kept, and the reason says RequestsFailed."""
    if pod is not None and _is_loadgen(pod):
        if reason == "PodFailed":
            reason = "LoadgenFailed"
        report = _read_report(k, cr["metadata"]["namespace"], pod)
        if report is not None:
            _keep_report(k, step, cr, report, logger)
            if reason == "LoadgenFailed":
                reason = "RequestsFailed"
                message = (f"{report.get('failed', '?')} request(s) failed, {report.get('completed', '?')} "
                           f"completed (report in {mf.report_configmap_name(cr['metadata']['name'])}); {message}")
    step.phase("Failed", reason, message)
    step.commit(k)
    return "Failed"


def reconcile_deployment(ns: str, name: str, logger: logging.Logger | None = None) -> str | None:
    """One reconcile step of EmulatedDeployment ns/name. Returns the phase after it."""
    logger = logger or _log
    k = kube()
    with _lock("emd", ns, name):
        cr = k.get_cr(EMD, ns, name)
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            return None
        step = _Step(cr)
        phase = step.status.get("phase")
        if phase in TERMINAL:
            return phase
        try:
            model = mf.validate(cr)
        except SpecError as e:
            step.phase("Failed", "InvalidSpec", "invalid spec: " + "; ".join(e.problems))
            step.commit(k)
            return "Failed"

        if phase is None:
            step.patch["gpus"] = mf.gpu_count(model)
            step.condition("SpecValid", "True", "Valid", "the spec is a valid revati run spec")
            step.phase("Pending", "Accepted", f"{model.spec.replicas} replica(s) of {model.spec.model} on "
                                              f"{mf.gpu_count(model)} virtual {model.spec.gpu} GPU(s)")
            step.commit(k)
            return "Pending"

        if FINALIZER not in (cr["metadata"].get("finalizers") or []):
            # Objects only once deletion is sure to run our cleanup: kopf adds the finalizer (its
            # patch may lose a race with a status patch and wait for the next event).
            logger.debug("waiting for the finalizer before creating objects")
            return phase
        images = mf.Images.from_env()
        for obj in mf.build_serving(cr, images):
            ensure(k, obj, logger)
        if phase == "Pending":
            step.phase("Starting", "ObjectsCreated",
                       f"created the coordinator, {model.spec.replicas} replica pod(s) and the router")
            step.commit(k)
            return "Starting"

        pods = _component_pods(k, ns, name)
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            failed = pod_failure(pod)
            if failed:
                return _fail(k, step, cr, pod, *failed, logger)

        if phase == "Starting":
            want = {mf.replica_name(name, i) for i in range(model.spec.replicas)}
            ready = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["name"] in want and _pod_ready(p))
            if len(ready) == len(want):
                ensure(k, mf.build_loadgen_job(cr, images), logger)
                step.condition("ReplicasReady", "True", "AllReady", f"{len(ready)}/{len(want)} replica pods Ready")
                step.phase("Running", "LoadStarted",
                           f"every replica pod is Ready; started the load generator Job {mf.loadgen_name(name)}")
            else:
                step.condition("ReplicasReady", "False", "Waiting", f"{len(ready)}/{len(want)} replica pods Ready")
            step.commit(k)
            return step.patch.get("phase", phase)

        # Running
        job, _ = ensure(k, mf.build_loadgen_job(cr, images), logger)
        js = job.get("status") or {}
        conds = {c.get("type"): c for c in js.get("conditions") or [] if c.get("status") == "True"}
        loadgen_pods = [p for p in pods if _is_loadgen(p)]
        if "Failed" in conds or (js.get("failed") or 0) > 0:
            msg = (conds.get("Failed") or {}).get("message") or "the load generator Job failed"
            # Read its pods again: the Job was read after the pod listing above.
            loadgen_pods = [p for p in _component_pods(k, ns, name) if _is_loadgen(p)]
            for pod in loadgen_pods:
                failed = pod_failure(pod)
                if failed:
                    return _fail(k, step, cr, pod, *failed, logger)
            last = sorted(loadgen_pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")[-1:]
            return _fail(k, step, cr, last[0] if last else None, "LoadgenFailed", msg, logger)
        if "Complete" in conds or (js.get("succeeded") or 0) > 0:
            done = [p for p in loadgen_pods if (p.get("status") or {}).get("phase") == "Succeeded"] or loadgen_pods
            if not done:
                raise kopf.TemporaryError("the loadgen Job succeeded but its pod is not listed yet", delay=2)
            pod = sorted(done, key=lambda p: p["metadata"].get("creationTimestamp") or "")[-1]
            report = _read_report(k, ns, pod)
            if report is None:
                step.phase("Failed", "NoReport",
                           f"pod {pod['metadata']['name']}: the loadgen log has no valid "
                           f"'{mf.REPORT_PREFIX.strip()} {{json}}' line")
                step.commit(k)
                return "Failed"
            _keep_report(k, step, cr, report, logger)
            step.condition("LoadgenComplete", "True", "Completed", f"the load generator finished (pod "
                                                                     f"{pod['metadata']['name']})")
            m = step.patch.get("metrics") or {}
            step.phase("Succeeded", "Completed",
                       f"{m.get('completed', '?')} requests completed, {m.get('failed', 0)} failed; report in "
                       f"ConfigMap {mf.report_configmap_name(name)}")
            step.commit(k)
            return "Succeeded"
        return phase


def _temporary(fn: Callable[[], Any]) -> Any:
    """Temporary API errors (conflicts, throttling, 5xx, connection errors) -> kopf retries."""
    try:
        return fn()
    except ApiException as e:
        if e.status in (409, 429) or (e.status or 0) >= 500:
            raise kopf.TemporaryError(f"Kubernetes API error {e.status} {e.reason}; retrying", delay=2) from None
        raise
    except (ConnectionError, OSError) as e:
        raise kopf.TemporaryError(f"Kubernetes API unreachable ({e}); retrying", delay=2) from None
    except Exception as e:  # urllib3 errors do not all derive from OSError
        if type(e).__module__.startswith("urllib3"):
            raise kopf.TemporaryError(f"Kubernetes API unreachable ({e}); retrying", delay=2) from None
        raise


def _quietly(fn: Callable[[], Any], logger: logging.Logger) -> None:
    """For event handlers (never retried by kopf): the next event or the timer retries."""
    try:
        _temporary(fn)
    except kopf.TemporaryError as e:
        logger.info(f"will retry: {e}")
    except Exception:  # noqa: BLE001 - logged; the timer retries
        logger.exception("reconcile failed; the timer will retry")


# --- EmulationSweep ----------------------------------------------------------------------

def _sweep_problems(exc: Exception) -> str:
    from pydantic import ValidationError

    from revati.spec.load import _field

    if isinstance(exc, ValidationError):
        return "; ".join(f"{_field(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors())
    return str(exc)


def reconcile_sweep(ns: str, name: str, logger: logging.Logger | None = None) -> str | None:
    """Creates the next children (at most maxParallel unfinished) and ranks them in status."""
    from revati.spec import sweep as sw

    logger = logger or _log
    k = kube()
    with _lock("ems", ns, name):
        body = k.get_cr(EMS, ns, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        status = dict(body.get("status") or {})
        phase = status.get("phase")
        if phase in TERMINAL:
            return phase
        patch: dict[str, Any] = {"observedGeneration": body["metadata"].get("generation")}
        conds = status.get("conditions") or []
        try:
            model = sw.EmulationSweep.model_validate({k2: body.get(k2) for k2 in ("apiVersion", "kind", "metadata", "spec")})
            children = sw.expand(model)
        except Exception as e:  # noqa: BLE001 - pydantic ValidationError or ValueError: the message names fields
            msg = "invalid sweep: " + _sweep_problems(e)
            patch.update(phase="Failed", conditions=upsert_condition(conds, "Failed", "True", "InvalidSpec", msg))
            if not is_subset(patch, status):
                k.patch_cr_status(EMS, ns, name, patch)
                _post(body, "warning", "InvalidSpec", msg)
            return "Failed"

        owner = mf.owner_reference(body)
        live = {c["metadata"]["name"]: c for c in k.list_cr(EMD, ns, f"{SWEEP_LABEL}={name}")}
        may_create = FINALIZER in (body["metadata"].get("finalizers") or [])  # see reconcile_deployment
        unfinished = sum(1 for c in children if c.name in live
                         and (live[c.name].get("status") or {}).get("phase") not in sw.FINISHED)
        for child in children:
            if child.name in live:
                continue
            if unfinished >= model.spec.maxParallel or not may_create:
                break
            cbody = json.loads(json.dumps(child.body))
            cbody["metadata"]["namespace"] = ns
            cbody["metadata"]["ownerReferences"] = [owner]
            cbody["metadata"].setdefault("labels", {})[SWEEP_LABEL] = name
            try:
                live[child.name] = k.create_cr(EMD, ns, cbody)
                logger.info(f"created child EmulatedDeployment {child.name} ({child.params})")
            except ApiException as e:
                if e.status != 409:
                    raise
                existing = k.get_cr(EMD, ns, child.name)
                if existing is None:
                    raise kopf.TemporaryError(f"child {child.name} is being replaced; retrying", delay=1) from None
                live[child.name] = existing
            unfinished += 1

        rows = [{"name": c.name, "params": c.params,
                 "phase": (live[c.name].get("status") or {}).get("phase"),
                 "metrics": (live[c.name].get("status") or {}).get("metrics")}
                for c in children if c.name in live]
        ranked = sw.rank(model.spec, rows)
        finished = all(c.name in live and (live[c.name].get("status") or {}).get("phase") in sw.FINISHED
                       for c in children)
        new_phase = "Succeeded" if finished else ("Running" if live else "Pending")
        patch.update(ranked)
        patch["children"] = [{key: v for key, v in row.items() if v is not None} for row in ranked["children"]]
        patch["phase"] = new_phase
        if new_phase == "Succeeded":
            cheapest = (ranked.get("cheapest") or {}).get("name")
            conds = upsert_condition(conds, "Complete", "True", "AllChildrenFinished",
                                     f"{ranked['progress']} children finished; cheapest meeting the SLO: "
                                     f"{cheapest or 'none'}")
        else:
            conds = upsert_condition(conds, "Complete", "False", "ChildrenRunning",
                                     f"{ranked['progress']} children finished")
        patch["conditions"] = conds
        if ranked.get("cheapest") is None:
            patch.pop("cheapest", None)
        if not is_subset(patch, status):
            k.patch_cr_status(EMS, ns, name, patch)
            if new_phase != phase:
                _post(body, "info", new_phase, f"sweep {new_phase}: {ranked['progress']} children finished")
        return new_phase


# --- kopf handlers -----------------------------------------------------------------------

@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """In a pod: the service account; elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    global _kube
    settings.persistence.finalizer = FINALIZER
    # Handler progress in annotations: status belongs to the CRDs' schema (written by us only).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="revati.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="revati.dev", key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    with _kube_guard:
        _kube = Kube(_load_client())  # a fresh client per operator run (tests start several)
    logger.info("revati operator started; images: %s", mf.Images.from_env())


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    global _kube
    with _kube_guard:
        if _kube is not None:
            _kube.api.close()
        _kube = None


@kopf.on.resume(GROUP, VERSION, EMD)
@kopf.on.create(GROUP, VERSION, EMD)
def deployment_created(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    _temporary(lambda: reconcile_deployment(namespace, name, logger))


@kopf.on.event(GROUP, VERSION, EMD)
def deployment_event(event: dict, body: kopf.Body, namespace: str, name: str, logger: logging.Logger,
                     **_: Any) -> None:
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    _quietly(lambda: reconcile_deployment(namespace, name, logger), logger)
    sweep = (body.metadata.get("labels") or {}).get(SWEEP_LABEL)
    if sweep:
        _quietly(lambda: reconcile_sweep(namespace, sweep, logger), logger)


@kopf.timer(GROUP, VERSION, EMD, interval=_resync_seconds(), initial_delay=_resync_seconds(),
            when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def deployment_resync(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    _temporary(lambda: reconcile_deployment(namespace, name, logger))


@kopf.on.event("", "v1", "pods", labels={mf.LABEL_DEPLOYMENT: kopf.PRESENT})
def pod_event(body: kopf.Body, namespace: str, logger: logging.Logger, **_: Any) -> None:
    owner = body.metadata.labels.get(mf.LABEL_DEPLOYMENT)
    if owner:
        _quietly(lambda: reconcile_deployment(namespace, owner, logger), logger)


@kopf.on.event("batch", "v1", "jobs", labels={mf.LABEL_DEPLOYMENT: kopf.PRESENT})
def job_event(body: kopf.Body, namespace: str, logger: logging.Logger, **_: Any) -> None:
    owner = body.metadata.labels.get(mf.LABEL_DEPLOYMENT)
    if owner:
        _quietly(lambda: reconcile_deployment(namespace, owner, logger), logger)


def delete_children(ns: str, name: str, uid: str | None, logger: logging.Logger | None = None) -> int:
    """Deletes every object of EmulatedDeployment ns/name (label revati.dev/deployment and
    managed-by revati-operator; top-level objects only when owned by this CR's uid)."""
    logger = logger or _log
    k = kube()
    sel = f"{mf.LABEL_DEPLOYMENT}={name},{mf.LABEL_MANAGED_BY}=revati-operator"
    n = 0
    # Under the reconcile lock: a reconcile that read the CR before its deletion finishes first
    # (it could otherwise re-create what is deleted here); later ones see deletionTimestamp.
    with _lock("emd", ns, name):
        for kind in ("Job", "Deployment", "Service", "ConfigMap", "Pod"):
            for obj in k.list(kind, ns, sel):
                refs = obj["metadata"].get("ownerReferences") or []
                ours = any(r.get("uid") == uid for r in refs)
                foreign = any(r.get("kind") == mf.KIND and r.get("uid") != uid for r in refs)
                if foreign and not ours:
                    continue
                try:
                    if k.delete(kind, ns, obj["metadata"]["name"]):
                        n += 1
                except ApiException as e:
                    if e.status != 403:
                        raise
                    # Not allowed (e.g. pods of a Job without pod delete rights): the garbage
                    # collector removes it through its owner references.
                    logger.warning(f"not allowed to delete {kind} {obj['metadata']['name']}; "
                                   "leaving it to the garbage collector")
    logger.info(f"deleted {n} object(s) of {name}")
    return n


@kopf.on.delete(GROUP, VERSION, EMD)
def deployment_deleted(namespace: str, name: str, uid: str, logger: logging.Logger, **_: Any) -> None:
    _temporary(lambda: delete_children(namespace, name, uid, logger))


@kopf.on.resume(GROUP, VERSION, EMS)
@kopf.on.create(GROUP, VERSION, EMS)
def sweep_created(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    _temporary(lambda: reconcile_sweep(namespace, name, logger))


@kopf.on.event(GROUP, VERSION, EMS)
def sweep_event(event: dict, body: kopf.Body, namespace: str, name: str, logger: logging.Logger,
                **_: Any) -> None:
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    _quietly(lambda: reconcile_sweep(namespace, name, logger), logger)


@kopf.timer(GROUP, VERSION, EMS, interval=_resync_seconds(), initial_delay=_resync_seconds(),
            when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def sweep_resync(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    _temporary(lambda: reconcile_sweep(namespace, name, logger))


@kopf.on.delete(GROUP, VERSION, EMS)
def sweep_deleted(namespace: str, name: str, uid: str, logger: logging.Logger, **_: Any) -> None:
    def run() -> None:
        k = kube()
        with _lock("ems", namespace, name):  # no reconcile creates a child while they are deleted
            for child in k.list_cr(EMD, namespace, f"{SWEEP_LABEL}={name}"):
                refs = child["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    k.delete_cr(EMD, namespace, child["metadata"]["name"])
                    logger.info(f"deleted child {child['metadata']['name']}")
    _temporary(run)
