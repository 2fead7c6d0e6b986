"""One reconcile of an EmulationSweep: the next children (at most maxParallel unfinished) and
their ranking (revati.spec.sweep.rank) in its status."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from revati.operator import manifests as mf
from revati.operator.kube import (
    EMD, EMS, FINALIZER, SWEEP_LABEL, TERMINAL, lock, log, post_event, is_subset, kube, upsert_condition)


def _sweep_problems(exc: Exception) -> str:
    from pydantic import ValidationError

    from revati.spec.load import _field

    if isinstance(exc, ValidationError):
        return "; ".join(f"{_field(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors())
    return str(exc)


def reconcile_sweep(ns: str, name: str, logger: logging.Logger | None = None) -> str | None:
    """Creates the next children (at most maxParallel unfinished) and ranks them in status."""
    from revati.spec import sweep as sw

    logger = logger or log
    k = kube()
    with lock("ems", ns, name):
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
                post_event(body, "warning", "InvalidSpec", msg)
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
                post_event(body, "info", new_phase, f"sweep {new_phase}: {ranked['progress']} children finished")
        return new_phase


