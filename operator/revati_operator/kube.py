"""The operator's Kubernetes side: the API client (dict in, dict out), create-or-patch,
conditions, events, per-object locks and the mapping of API errors to kopf's retries.
Shared by the EmulatedDeployment and EmulationSweep reconciles (deployments.py, sweeps.py)."""

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

from revati.operator import manifests as mf

GROUP, VERSION = mf.GROUP, mf.VERSION
EMD = mf.PLURAL
EMS = mf.SWEEP_PLURAL
FINALIZER = "revati.dev/cleanup"
TERMINAL = ("Succeeded", "Failed")
SWEEP_LABEL = "revati.dev/sweep"

log = logging.getLogger("revati.operator")


# --- the API client ----------------------------------------------------------------------

class NotFound(Exception):
    pass


_KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("CoreV1Api", "config_map"),
    "Service": ("CoreV1Api", "service"),
    "Pod": ("CoreV1Api", "pod"),
    "Deployment": ("AppsV1Api", "deployment"),
    "Job": ("BatchV1Api", "job"),
    "Secret": ("CoreV1Api", "secret"),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy"),
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
        self._apis = {n: getattr(kubernetes.client, n)(api) for n in ("CoreV1Api", "AppsV1Api", "BatchV1Api", "NetworkingV1Api")}

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


def open_client() -> None:
    """A fresh client for this operator run (tests start several in one process)."""
    global _kube
    with _kube_guard:
        _kube = Kube(_load_client())


def close_client() -> None:
    global _kube
    with _kube_guard:
        if _kube is not None:
            _kube.api.close()
        _kube = None


# --- helpers -----------------------------------------------------------------------------

_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def lock(*key: str) -> threading.Lock:
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
    Jobs only get their metadata reconciled (their specs are immutable). Secrets: create_once."""
    kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
    live = k.read(kind, ns, name)
    if live is None:
        try:
            created = k.create(kind, ns, obj)
            (logger or log).info(f"created {kind} {name}")
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
    (logger or log).info(f"patched {kind} {name} (adopted or drifted)")
    return patched, "patched"


def create_once(k: Kube, obj: dict, logger: logging.Logger | None = None) -> bool:
    """Creates obj unless one of its name exists (then leaves it as it is, unread: the operator
    may create Secrets but not read them). Returns whether it was created."""
    try:
        k.create(obj["kind"], obj["metadata"]["namespace"], obj)
    except ApiException as e:
        if e.status == 409:
            return False
        raise
    (logger or log).info(f"created {obj['kind']} {obj['metadata']['name']}")
    return True


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


def post_event(body: dict, kind: str, reason: str, message: str) -> None:
    try:
        (kopf.warning if kind == "warning" else kopf.info)(body, reason=reason, message=message[:1000])
    except Exception:  # noqa: BLE001 - an event is a courtesy; never fail a reconcile over it
        pass


def temporary(fn: Callable[[], Any]) -> Any:
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


def quietly(fn: Callable[[], Any], logger: logging.Logger) -> None:
    """For event handlers (never retried by kopf): the next event or the timer retries."""
    try:
        temporary(fn)
    except kopf.TemporaryError as e:
        logger.info(f"will retry: {e}")
    except Exception:  # noqa: BLE001 - logged; the timer retries
        logger.exception("reconcile failed; the timer will retry")


