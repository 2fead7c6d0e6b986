"""One reconcile step of an EmulatedDeployment (the phases: handlers.py's docstring), its
pods' failures, and the deletion of its children."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from revati.operator import manifests as mf
from revati.run import faults
from revati.operator.kube import (
    EMD, FINALIZER, TERMINAL, Kube, create_once, lock, log, post_event, ensure, is_subset, kube, upsert_condition)
from revati.spec import SpecError

#: Exit code of an emulated process that the time warp declared deadlocked.
DEADLOCK_EXIT_CODE = 3


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
            else:  # as `revati run` names it: EngineCrashed, WorkerCrashed, SidecarCrashed ...
                component = (pod["metadata"].get("labels") or {}).get(mf.LABEL_COMPONENT)
                reason = faults.pod_condition(component, cs.get("name"), code, text) or "PodFailed"
            msg = f"pod {name}: container {cs.get('name')} terminated with exit code {code} ({why})"
            if code > 128:
                msg += f", {faults.exit_code_words(code)}"
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
        post_event(self.cr, event if phase != "Failed" else "warning", reason, f"{phase}: {message}")

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
    logger = logger or log
    k = kube()
    with lock("emd", ns, name):
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
        create_once(k, mf.build_secret(cr), logger)  # a new value only if there is none yet
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


def delete_children(ns: str, name: str, uid: str | None, logger: logging.Logger | None = None) -> int:
    """Deletes every object of EmulatedDeployment ns/name (label revati.dev/deployment and
    managed-by revati-operator; top-level objects only when owned by this CR's uid)."""
    logger = logger or log
    k = kube()
    sel = f"{mf.LABEL_DEPLOYMENT}={name},{mf.LABEL_MANAGED_BY}=revati-operator"
    n = 0
    # Under the reconcile lock: a reconcile that read the CR before its deletion finishes first
    # (it could otherwise re-create what is deleted here); later ones see deletionTimestamp.
    with lock("emd", ns, name):
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


