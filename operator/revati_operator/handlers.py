"""kopf handlers of the revati operator: `kopf run --standalone -m revati.operator.handlers`.

This module registers the handlers; the reconciles are deployments.py and sweeps.py, the API
side kube.py.

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

import logging
import os
from typing import Any

import kopf

from revati import envs
from revati.operator import manifests as mf
from revati.operator.deployments import delete_children, reconcile_deployment
from revati.operator.kube import (
    EMD, EMS, FINALIZER, GROUP, SWEEP_LABEL, TERMINAL, VERSION, lock, quietly, temporary, close_client, kube, open_client)
from revati.operator.sweeps import reconcile_sweep


def _resync_seconds() -> float:
    try:
        return max(1.0, float(envs.get("REVATI_OPERATOR_RESYNC_SECONDS") or 30))
    except ValueError:
        return 30.0


# --- kopf handlers -----------------------------------------------------------------------

@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """In a pod: the service account; elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Handler progress in annotations: status belongs to the CRDs' schema (written by us only).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="revati.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="revati.dev", key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    open_client()  # a fresh client per operator run (tests start several)
    logger.info("revati operator started; images: %s", mf.Images.from_env())


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    close_client()


@kopf.on.resume(GROUP, VERSION, EMD)
@kopf.on.create(GROUP, VERSION, EMD)
def deployment_created(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    temporary(lambda: reconcile_deployment(namespace, name, logger))


@kopf.on.event(GROUP, VERSION, EMD)
def deployment_event(event: dict, body: kopf.Body, namespace: str, name: str, logger: logging.Logger,
                     **_: Any) -> None:
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    quietly(lambda: reconcile_deployment(namespace, name, logger), logger)
    sweep = (body.metadata.get("labels") or {}).get(SWEEP_LABEL)
    if sweep:
        quietly(lambda: reconcile_sweep(namespace, sweep, logger), logger)


@kopf.timer(GROUP, VERSION, EMD, interval=_resync_seconds(), initial_delay=_resync_seconds(),
            when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def deployment_resync(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    temporary(lambda: reconcile_deployment(namespace, name, logger))


@kopf.on.event("", "v1", "pods", labels={mf.LABEL_DEPLOYMENT: kopf.PRESENT})
def pod_event(body: kopf.Body, namespace: str, logger: logging.Logger, **_: Any) -> None:
    owner = body.metadata.labels.get(mf.LABEL_DEPLOYMENT)
    if owner:
        quietly(lambda: reconcile_deployment(namespace, owner, logger), logger)


@kopf.on.event("batch", "v1", "jobs", labels={mf.LABEL_DEPLOYMENT: kopf.PRESENT})
def job_event(body: kopf.Body, namespace: str, logger: logging.Logger, **_: Any) -> None:
    owner = body.metadata.labels.get(mf.LABEL_DEPLOYMENT)
    if owner:
        quietly(lambda: reconcile_deployment(namespace, owner, logger), logger)


@kopf.on.delete(GROUP, VERSION, EMD)
def deployment_deleted(namespace: str, name: str, uid: str, logger: logging.Logger, **_: Any) -> None:
    temporary(lambda: delete_children(namespace, name, uid, logger))


@kopf.on.resume(GROUP, VERSION, EMS)
@kopf.on.create(GROUP, VERSION, EMS)
def sweep_created(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    temporary(lambda: reconcile_sweep(namespace, name, logger))


@kopf.on.event(GROUP, VERSION, EMS)
def sweep_event(event: dict, body: kopf.Body, namespace: str, name: str, logger: logging.Logger,
                **_: Any) -> None:
    if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    quietly(lambda: reconcile_sweep(namespace, name, logger), logger)


@kopf.timer(GROUP, VERSION, EMS, interval=_resync_seconds(), initial_delay=_resync_seconds(),
            when=lambda status, **_: (status or {}).get("phase") not in TERMINAL)
def sweep_resync(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    temporary(lambda: reconcile_sweep(namespace, name, logger))


@kopf.on.delete(GROUP, VERSION, EMS)
def sweep_deleted(namespace: str, name: str, uid: str, logger: logging.Logger, **_: Any) -> None:
    def run() -> None:
        k = kube()
        with lock("ems", namespace, name):  # no reconcile creates a child while they are deleted
            for child in k.list_cr(EMD, namespace, f"{SWEEP_LABEL}={name}"):
                refs = child["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    k.delete_cr(EMD, namespace, child["metadata"]["name"])
                    logger.info(f"deleted child {child['metadata']['name']}")
    temporary(run)
