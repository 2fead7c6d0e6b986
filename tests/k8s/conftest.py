"""An in-memory Kubernetes API server for the operator tests: kmock 0.8 with fixes.

No kube-apiserver can run here. kmock's KubernetesEmulator stores objects, serves list/watch
and discovery; this fixture fixes what the real kopf operator and the real `kubernetes`
client need from a Kubernetes API:

- create: 201, metadata.uid/resourceVersion/creationTimestamp/generation, generateName,
  metadata.namespace from the URL, 409 AlreadyExists; status is dropped for resources with a
  status subresource (as the API server does);
- patch: merge-patch (RFC 7386, null deletes), strategic-merge (treated as a merge patch),
  JSON patch with `test` ops (422 on a failed test: kopf's optimistic finalizer patches),
  resourceVersion conflicts (409), the status subresource (the main endpoint ignores status,
  /status changes only status), no-op patches change nothing (no new resourceVersion, no
  watch event), spec changes bump metadata.generation;
- delete: finalizers hold an object with deletionTimestamp until they are removed;
- list/watch: label selectors, resourceVersion bookkeeping, no event lost between the initial
  listing and the stream, timeoutSeconds;
- discovery: the core group (/api/v1) and group versions are served from declared resources;
  CRDs posted to apiextensions.k8s.io/v1 register their resources (kind, plural, short names,
  status subresource), as the API server does;
- pods/log: served from `cluster.pod_logs[(namespace, name)]` (a kubelet stand-in).

There is no garbage collector, no controller (Deployments create no pods, Jobs run nothing)
and no schema validation: tests patch pod and Job statuses to simulate the cluster.

The server runs on its own event loop in a thread; tests use the synchronous `kubernetes`
client, and the operator runs with kopf.testing.KopfRunner in another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import os
import random
import re
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import pytest
import yaml
from kmock._internal import enums, parsing, rendering

NAMESPACE = "revati-test"

_ALL_VERBS = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

#: Built-in resources the operator and kopf use: (group/version/plural, kind, namespaced, subresources).
BUILTIN_RESOURCES = [
    ("v1/namespaces", "Namespace", False, {"status"}),
    ("v1/pods", "Pod", True, {"status", "log"}),
    ("v1/services", "Service", True, {"status"}),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/secrets", "Secret", True, set()),
    ("networking.k8s.io/v1/networkpolicies", "NetworkPolicy", True, set()),
    ("v1/events", "Event", True, set()),
    ("apps/v1/deployments", "Deployment", True, {"status"}),
    ("batch/v1/jobs", "Job", True, {"status"}),
    ("events.k8s.io/v1/events", "Event", True, set()),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, {"status"}),
]

CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
PODS = kmock.resource("", "v1", "pods")


_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespace prefix with no resource: the
    cluster-scoped `namespaces` resource itself (kopf lists and watches it) could not be used."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
            len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))):
        return parsing.ParsedPath(group="", version="v1", plural="namespaces",
                                  name=parts[3] if len(parts) > 3 else None,
                                  subresource=parts[4] if len(parts) > 4 else None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path  # the fix applies to every kmock server of the test process


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# --- label selectors -----------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([\w./-]*))?\s*$")


def _split_selector(text: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return terms


def selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Kubernetes label selector syntax: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    if not selector:
        return True
    labels = labels or {}
    for term in _split_selector(selector):
        m = _SET_TERM.match(term)
        if not m:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message=f"bad label selector {term!r}")
        neg, key, setop, values, op, value = m.groups()
        if setop:
            vals = {v.strip() for v in values.split(",") if v.strip()}
            ok = (labels.get(key) in vals) if setop == "in" else (key not in labels or labels[key] not in vals)
        elif op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        else:
            ok = (key in labels) != bool(neg)
        if not ok:
            return False
    return True


def _field_selector_matches(selector: str | None, obj: dict) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        key = key.rstrip("=!")
        node: Any = obj
        for part in key.strip().split("."):
            node = node.get(part) if isinstance(node, dict) else None
        want_equal = "!=" not in term
        if (str(node) == value.lstrip("=")) != want_equal:
            return False
    return True


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the fixes listed in the module docstring."""

    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    #: Injected failures: {method, path (regex), status, times, hits}; see MockCluster.inject_fault.
    faults: list[dict] = attrs.field(factory=list)
    _rv: Any = attrs.field(factory=lambda: itertools.count(1))
    _last_rv: int = 0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, kind, namespaced, subresources in BUILTIN_RESOURCES:
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=_ALL_VERBS,
                subresources=subresources)

    # -- helpers --------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _info(self, res: kmock.resource) -> kmock.ResourceInfo:
        if res not in self.resources:
            raise _error(404, "NotFound", f"the server could not find the requested resource ({res.group}/"
                                          f"{res.version}/{res.plural})")
        return self.resources[res]

    def _key(self, request: rendering.Request, info: kmock.ResourceInfo, name: str | None = None):
        return (request.resource, request.namespace if info.namespaced else None, name or request.name)

    def _live(self, key) -> kmock.Object | None:
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    async def _emit(self, res: kmock.resource, kind: str, obj: dict) -> None:
        await self._buses[res].put({"type": kind, "object": copy.deepcopy(obj)})

    def register_crd(self, crd: dict) -> None:
        """What the API server does for an established CRD: serve its resources."""
        spec = crd["spec"]
        names = spec["names"]
        for v in spec["versions"]:
            if not v.get("served", True):
                continue
            subresources = set((v.get("subresources") or spec.get("subresources") or {}).keys())
            self.resources[f"{spec['group']}/{v['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names["kind"], singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced", verbs=_ALL_VERBS,
                shortnames=set(names.get("shortNames") or []), categories=set(names.get("categories") or []),
                subresources=subresources)

    # -- request routing ------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        for f in self.faults:
            if f["times"] > 0 and request.method.value == f["method"] and re.search(f["path"], request.url.path):
                f["times"] -= 1
                f["hits"] += 1
                raise _error(f["status"], "ServiceUnavailable", "injected fault (the test asked for it)")
        res = request.resource
        if res is not None:
            # Discovery of a group (/apis/g) or a group version (/api/v1, /apis/g/v): kmock would
            # take GET /api/v1 for a LIST of a resource without a plural.
            if res.plural is None:
                if res.version is None:
                    return aiohttp.web.json_response(await self._serve_group(request))
                return aiohttp.web.json_response(await self._serve_version(request))
            if request.action == enums.action.CREATE:
                return await self._create(request)
            if request.action == enums.action.UPDATE:
                return await self._patch(request)
            if request.action == enums.action.DELETE and request.name is not None:
                return await self._delete(request)
            if res == PODS and request.subresource == "log" and request.action == enums.action.FETCH:
                key = (PODS, request.namespace, request.name)
                if self._live(key) is None:
                    raise _error(404, "NotFound", f'pods "{request.name}" not found')
                return aiohttp.web.Response(text=self.pod_logs.get((request.namespace, request.name), ""),
                                            content_type="text/plain")
            if request.method == enums.method.PUT:
                raise _error(405, "MethodNotAllowed", "PUT (replace) is not emulated; use PATCH")
            if request.action == enums.action.FETCH and request.subresource in (None, "status"):
                info = self._info(res)
                async with self._lock:
                    obj = self._live(self._key(request, info))
                    if obj is None:
                        raise _error(404, "NotFound", f'{res.plural} "{request.name}" not found')
                    body = copy.deepcopy(obj.raw)
                return aiohttp.web.json_response(body)
            if request.action == enums.action.LIST:
                return aiohttp.web.json_response(await self._serve_list(request))
            if request.action == enums.action.WATCH:
                self._info(res)
        return await super()._handle(request)

    # -- mutations --------------------------------------------------------------------------

    async def _create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        info = self._info(res)
        body = copy.deepcopy(request.data)
        if not isinstance(body, dict):
            raise _error(400, "BadRequest", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if info.namespaced:
            ns = request.namespace or meta.get("namespace")
            if not ns:
                raise _error(400, "BadRequest", "a namespaced resource needs a namespace")
            if meta.get("namespace") not in (None, ns):
                raise _error(400, "BadRequest", "the namespace of the object does not match the namespace of the URL")
            meta["namespace"] = ns
        else:
            ns = None
            meta.pop("namespace", None)
        key = (res, ns, meta["name"])
        async with self._lock:
            if self._live(key) is not None:
                raise _error(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "uid", "resourceVersion"):
                meta.pop(k, None)
            meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=_now(),
                        generation=1)
            if "status" in info.subresources:
                body.pop("status", None)
            body.setdefault("apiVersion", f"{res.group}/{res.version}" if res.group else res.version)
            body.setdefault("kind", info.kind)
            if key in self.objects:
                self.objects[key].create(body)
            else:
                self.objects[key] = body
            await self._emit(res, "ADDED", body)
        if res == CRDS:
            self.register_crd(body)
        return aiohttp.web.json_response(body, status=201)

    async def _patch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        info = self._info(res)
        key = self._key(request, info)
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        data = request.data
        async with self._lock:
            obj = self._live(key)
            if obj is None:
                raise _error(404, "NotFound", f'{res.plural} "{request.name}" not found')
            current = copy.deepcopy(obj.raw)
            if ctype == "application/json-patch+json":
                if not isinstance(data, list):
                    raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
                try:
                    patched = jsonpatch.apply_patch(current, data)
                except jsonpatch.JsonPatchTestFailed as e:
                    raise _error(422, "Invalid", f"the JSON patch test failed: {e}") from None
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise _error(422, "Invalid", f"the JSON patch cannot be applied: {e}") from None
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                           "application/json"):
                if not isinstance(data, dict):
                    raise _error(400, "BadRequest", "a merge patch must be a JSON object")
                want_rv = (data.get("metadata") or {}).get("resourceVersion")
                if want_rv is not None and want_rv != current["metadata"].get("resourceVersion"):
                    raise _error(409, "Conflict", "the object has been modified; please apply your changes "
                                                  "to the latest version and try again")
                patched = merge_patch(current, data)
            else:
                raise _error(415, "UnsupportedMediaType", f"the patch type {ctype!r} is not supported")

            sub = request.subresource
            if sub not in (None, "status") or (sub == "status" and "status" not in info.subresources):
                raise _error(404, "NotFound", f"no subresource {sub!r} on {res.plural}")
            if "status" in info.subresources:
                if sub == "status":
                    new = copy.deepcopy(current)
                    if "status" in patched:
                        new["status"] = patched["status"]
                    else:
                        new.pop("status", None)
                else:
                    new = patched
                    if "status" in current:
                        new["status"] = current["status"]
                    else:
                        new.pop("status", None)
            else:
                new = patched
            meta = new.setdefault("metadata", {})
            for k in ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion",
                      "deletionTimestamp"):
                if k in current["metadata"]:
                    meta[k] = current["metadata"][k]
                else:
                    meta.pop(k, None)
            for k in ("finalizers", "annotations", "labels", "ownerReferences"):
                if k in meta and not meta[k]:
                    del meta[k]
            if new == current:
                return aiohttp.web.json_response(current)
            if sub is None and new.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            meta["resourceVersion"] = self._next_rv()
            obj.create(new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                obj.delete()
                await self._emit(res, "DELETED", new)
            else:
                await self._emit(res, "MODIFIED", new)
        return aiohttp.web.json_response(new)

    async def _delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        info = self._info(res)
        key = self._key(request, info)
        async with self._lock:
            obj = self._live(key)
            if obj is None:
                raise _error(404, "NotFound", f'{res.plural} "{request.name}" not found')
            current = copy.deepcopy(obj.raw)
            if current["metadata"].get("deletionTimestamp"):
                return aiohttp.web.json_response(current)
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            obj.create(new)
            if new["metadata"].get("finalizers"):
                await self._emit(res, "MODIFIED", new)
            else:
                obj.delete()
                await self._emit(res, "DELETED", new)
        return aiohttp.web.json_response(new)

    # -- reads ------------------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        out = await super()._serve_version(request)
        if request.resource.group == "":
            out["groupVersion"] = request.resource.version  # "v1", not "/v1"
        return out

    def _select(self, request: rendering.Request, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        return (selector_matches(request.params.get("labelSelector"), meta.get("labels"))
                and _field_selector_matches(request.params.get("fieldSelector"), obj))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        info = self._info(request.resource)
        async with self._lock:
            items = [copy.deepcopy(o.raw) for (r, _, _), o in self.objects.items()
                     if r == request.resource and not o.deleted]
            rv = str(self._last_rv)
        items = [o for o in items if self._select(request, o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        res = request.resource
        return {"apiVersion": f"{res.group}/{res.version}" if res.group else res.version,
                "kind": f"{info.kind}List", "metadata": {"resourceVersion": rv}, "items": items}

    async def _serve_watch(self, request: rendering.Request):
        yield b""  # send the headers now: the stream is open even if nothing happens
        bus = self._buses[request.resource]
        since = request.params.get("resourceVersion") or ""
        timeout = float(request.params["timeoutSeconds"]) if request.params.get("timeoutSeconds") else None
        async with self._lock:  # mark under the lock: no event is lost between listing and streaming
            mark = await bus.mark()
            existing = [copy.deepcopy(o.raw) for (r, _, _), o in self.objects.items()
                        if r == request.resource and not o.deleted]
        try:
            for obj in existing:
                rv = obj["metadata"].get("resourceVersion", "0")
                if since.isdigit() and rv.isdigit() and int(rv) <= int(since):
                    continue
                if self._select(request, obj):
                    yield {"type": "ADDED", "object": obj}
            deadline = None if timeout is None else time.monotonic() + timeout
            stream = bus.stream(since=mark)
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                try:
                    event = await asyncio.wait_for(anext(stream), left)
                except (TimeoutError, StopAsyncIteration):
                    return
                if self._select(request, event.get("object") or {}):
                    yield event
        finally:
            await bus.unmark(mark)


class MockCluster:
    """Runs an ApiServer on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: ApiServer | None = None
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock-apiserver", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self._error = e
            self._ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with ApiServer() as handler, kmock.Server(handler) as srv:
            self.server = handler
            self.url = str(srv.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> "MockCluster":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the mock API server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs fn on the server's loop (for direct access to its state) and returns its result."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def inject_fault(self, method: str, path: str, status: int = 503, times: int = 1) -> dict:
        """The next `times` requests `method` to a path matching the regex `path` fail with `status`.
        Returns the fault record; its "hits" counts the failures served."""
        fault = {"method": method.upper(), "path": path, "status": status, "times": times, "hits": 0}
        self.call(lambda: self.server.faults.append(fault))
        return fault

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        self.call(lambda: self.server.pod_logs.__setitem__((namespace, name), text))

    def kubeconfig(self, namespace: str) -> dict:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock",
                                                        "namespace": namespace}}],
        }


def revati_crds() -> list[dict]:
    """The project's CRDs (revati.spec.crds); until that module lands, minimal equivalents."""
    try:
        from revati.spec import crds

        return [crds.emulated_deployment_crd(), crds.emulation_sweep_crd()]
    except ImportError:
        def crd(kind: str, plural: str, short: str) -> dict:
            return {
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.revati.dev"},
                "spec": {"group": "revati.dev", "scope": "Namespaced",
                         "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                                   "shortNames": [short]},
                         "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                       "subresources": {"status": {}},
                                       "schema": {"openAPIV3Schema": {
                                           "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
            }
        return [crd("EmulatedDeployment", "emulateddeployments", "emd"),
                crd("EmulationSweep", "emulationsweeps", "ems")]


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[MockCluster]:
    """A fresh in-memory API server (one per test module) with both CRDs applied and the test
    namespace created. Tests of a module share it (and the operator): each uses its own names."""
    c = MockCluster().start()
    try:
        import kubernetes

        cfg = kubernetes.client.Configuration()
        cfg.host = c.url
        with kubernetes.client.ApiClient(cfg) as api:
            ext = kubernetes.client.ApiextensionsV1Api(api)
            for crd in revati_crds():
                ext.create_custom_resource_definition(crd, _preload_content=False)
            kubernetes.client.CoreV1Api(api).create_namespace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, _preload_content=False)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def api(cluster: MockCluster):
    """A real kubernetes ApiClient configured against the mock server."""
    import kubernetes

    cfg = kubernetes.client.Configuration()
    cfg.host = cluster.url
    with kubernetes.client.ApiClient(cfg) as client:
        yield client


@pytest.fixture(scope="module")
def kubeconfig(cluster: MockCluster, tmp_path_factory) -> Iterator[str]:
    """A kubeconfig file for the mock server, in $KUBECONFIG (as kopf and the operator read it)."""
    path = tmp_path_factory.mktemp("kube") / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(cluster.kubeconfig(NAMESPACE)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(path))
        mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield str(path)


@contextlib.contextmanager
def run_operator(namespace: str = NAMESPACE, extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """The REAL operator: `kopf run --standalone -m revati.operator.handlers --namespace NS`."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "-m", "revati.operator.handlers", "--namespace", namespace, "--verbose",
            *extra_args]
    with KopfRunner(args, timeout=60) as runner:
        yield runner


@pytest.fixture(scope="module")
def operator(kubeconfig: str):
    """The operator, running for the whole module against the module's mock cluster."""
    with run_operator() as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    # Expected failures (injected API faults) are retried and logged without a traceback;
    # a traceback means a handler hit an unexpected error.
    assert "Traceback" not in runner.output, runner.output[-20000:]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
             interval: float = 0.1) -> Any:
    """Polls predicate until it returns a truthy value; fails with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as e:  # noqa: BLE001 - e.g. a 404 while the object does not exist yet
            last_exc = e
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def raw(call, *args, **kwargs) -> dict:
    """Calls a kubernetes client method and returns the server's JSON as a dict."""
    resp = call(*args, _preload_content=False, **kwargs)
    data = resp.data
    return json.loads(data) if data else {}
