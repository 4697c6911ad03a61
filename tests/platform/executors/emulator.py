"""A Kubernetes API emulator (kmock) with what a real API server always does, and a
kubeconfig that points at it. Shared by the executor tests (tests/platform/executors) and
the behavioural suite (tests/platform/backends), which serves it from a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums

NAMESPACE = "gm-test"


# The request being matched against the reactions, in the task that serves it (see
# Emulator.__iter__).
_MATCHING: contextvars.ContextVar[kmock.Request | None] = contextvars.ContextVar(
    "matching", default=None)


@dataclass
class Fault:
    """An answer the emulator gives instead of (or after) serving a matching request."""

    method: str
    path_suffix: str  # the end of the request's path, e.g. "/pods" or "/pods/gm-exec-x"
    status: int  # 0: no error answer, only the delay
    times: int = 1
    headers: Mapping[str, str] | None = None
    # Serve the request (store the object) before the delay and the error: the response
    # was lost or late, the change was made (a create that timed out but went through).
    serve_first: bool = False
    delay_s: float = 0.0  # before answering; with status 0, the real answer comes late

    def matches(self, request: kmock.Request) -> bool:
        return (self.times > 0 and request.method.value.lower() == self.method.lower()
                and str(request.url.path).endswith(self.path_suffix))


class _Recorder:
    """Stands in for kmock's per-resource event bus: records every change kmock makes
    through the API (create, patch, delete) in the emulator's watch history."""

    def __init__(self, emulator: Emulator, resource: Any) -> None:
        self.emulator = emulator
        self.resource = resource

    async def put(self, event: Mapping[str, Any]) -> None:
        self.emulator._record(self.resource, str(event["type"]), event["object"])


class _Buses(dict[Any, _Recorder]):
    def __init__(self, emulator: Emulator) -> None:
        super().__init__()
        self.emulator = emulator

    def __missing__(self, resource: Any) -> _Recorder:
        recorder = self[resource] = _Recorder(self.emulator, resource)
        return recorder


def _selector(raw: str | None) -> dict[str, str]:
    """Equality-based label selectors only (``a=b,c=d``), as the executor sends them."""
    wanted: dict[str, str] = {}
    for part in (raw or "").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            wanted[key.strip()] = value.strip().lstrip("=")
    return wanted


def _labelled(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


class Emulator(kmock.KubernetesEmulator):
    """kmock plus what a real API server always does and kr8s relies on.

    kmock 0.8 never stamps uid, resourceVersion, creationTimestamp or the URL's namespace,
    never bumps a Deployment's generation when its spec changes, and answers 404 to lists of
    a resource it holds no object of. Its watches replay every object from the start and
    ignore ``resourceVersion`` and label selectors; here lists carry the current
    resourceVersion, a watch streams the changes after the one it is given (or 410 Gone once
    ``compact`` dropped them), and both honour equality label selectors. Changes the tests
    make to objects directly (playing the kubelet) reach watches through ``update``.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self.version = 0  # the resourceVersion of the newest change
        self.history: list[tuple[int, Any, str, str, dict[str, Any]]] = []
        self.compacted = 0  # watches from a resourceVersion below this get 410 Gone
        self.faults: list[Fault] = []
        self._changed = asyncio.Event()
        self._watch_epoch = 0
        self.open_watches = 0
        self._buses = _Buses(self)  # type: ignore[assignment]
        # A real server lists an empty collection; kmock answers 404 for a resource it has
        # never seen an object of, unless the resource is declared.
        for resource, kind in (
            ("v1/pods", "Pod"),
            ("v1/services", "Service"),
            ("apps/v1/deployments", "Deployment"),
            ("batch/v1/jobs", "Job"),
            ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget"),
        ):
            self.resources[resource] = {"namespaced": True, "kind": kind}
        self["get /version/"] << {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        self["get /api/"] << {"kind": "APIVersions", "versions": ["v1"]}
        self["get /apis/"] << {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}

    def _next_version(self) -> int:
        self.version = next(self._versions)
        return self.version

    def _record(self, resource: Any, kind: str, obj: Mapping[str, Any]) -> None:
        raw = copy.deepcopy(dict(obj))
        metadata = raw.setdefault("metadata", {})
        stamped = int(metadata.get("resourceVersion") or 0)
        version = stamped if stamped > (self.history[-1][0] if self.history else 0) \
            else self._next_version()
        metadata["resourceVersion"] = str(version)
        self.history.append((version, resource, metadata.get("namespace") or NAMESPACE,
                             kind, raw))
        self._changed.set()

    # -- watch, list, faults -----------------------------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> Any:
        listed = await super()._serve_list(request)
        wanted = _selector(request.params.get("labelSelector"))
        listed["items"] = [item for item in listed["items"] if _labelled(item, wanted)]
        listed["metadata"] = {"resourceVersion": str(self.version)}
        return listed

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        epoch = self._watch_epoch
        self.open_watches += 1
        try:
            async for event in self._watch_events(request, epoch):
                yield event
        finally:
            self.open_watches -= 1

    async def _watch_events(self, request: kmock.Request, epoch: int) -> AsyncIterator[Any]:
        yield b""  # the headers go out at once
        since = int(request.params.get("resourceVersion") or 0)
        if since < self.compacted:
            yield {"type": "ERROR", "object": {
                "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Expired",
                "code": 410, "message": f"too old resource version: {since} ({self.compacted})"}}
            return
        wanted = _selector(request.params.get("labelSelector"))
        position = 0
        while True:
            while position < len(self.history) and epoch == self._watch_epoch:
                version, resource, namespace, kind, obj = self.history[position]
                position += 1
                if (version > since and resource == request.resource
                        and request.namespace in (None, namespace) and _labelled(obj, wanted)):
                    yield {"type": kind, "object": obj}
            self._changed.clear()
            if epoch != self._watch_epoch:
                return  # dropped: the client watches again from where it was
            await self._changed.wait()

    def compact(self) -> None:
        """Forget the history so far: a watch resumed from an older version gets 410 Gone."""
        self.compacted = self.version + 1
        self.drop_watches()

    def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart or a load balancer does."""
        self._watch_epoch += 1
        self._changed.set()

    def fail(self, method: str, path_suffix: str, status: int, **options: Any) -> Fault:
        fault = Fault(method, path_suffix, status, **options)
        self.faults.append(fault)
        return fault

    def watches(self, resource: str = "pods") -> list[kmock.Request]:
        return [r for r in self if r.resource is not None and r.resource.plural == resource
                and r.params.get("watch") == "true"]

    def lists(self, resource: str = "pods") -> list[kmock.Request]:
        return [r for r in self if r.method.value.lower() == "get" and r.name is None
                and r.resource is not None and r.resource.plural == resource
                and r.params.get("watch") != "true"]

    def __iter__(self) -> Iterator[kmock.Request]:
        """Every request received; while one is served, only that one.

        kmock decides which reaction answers a request by checking that the request is
        among the reaction's (filtered) requests, which iterates over every request the
        server ever received: quadratic, minutes for a few thousand requests. Views built
        on this server (reactions) see only the request being served, in its own task.
        """
        matching = _MATCHING.get()
        if matching is not None:
            yield matching
            return
        yield from super().__iter__()

    async def _handle(self, request: kmock.Request) -> Any:
        _MATCHING.set(request)
        fault = next((fault for fault in self.faults if fault.matches(request)), None)
        if fault is not None:
            fault.times -= 1
            answer = await self._serve(request) if fault.serve_first else None
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if not fault.status:
                return answer if answer is not None else await self._serve(request)
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": fault.status,
                 "reason": "Injected", "message": f"injected {fault.status}"},
                status=fault.status, headers=dict(fault.headers or {}))
        return await self._serve(request)

    async def _serve(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            version = str(self._next_version())
            if request.action == enums.action.CREATE:
                metadata.setdefault("uid", f"uid-{version}")
                metadata.setdefault("creationTimestamp", f"2026-11-23T12:00:{int(version):02d}Z")
                metadata.setdefault("generation", 1)
                if request.namespace:
                    metadata.setdefault("namespace", request.namespace)
                metadata["resourceVersion"] = version
            elif request.action == enums.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    # a resourceVersion in the patch is a precondition, as on a real server
                    sent = metadata.get("resourceVersion")
                    live_version = self.objects[key].get("metadata", {}).get("resourceVersion")
                    if sent is not None and str(sent) != str(live_version):
                        return aiohttp.web.json_response(
                            {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                             "code": 409, "reason": "Conflict",
                             "message": "the object has been modified; please apply your "
                             "changes to the latest version and try again"}, status=409)
                    if "spec" in request.data:
                        live = self.objects[key].get("metadata", {})
                        metadata["generation"] = live.get("generation", 1) + 1
                    metadata["resourceVersion"] = version
        return await super()._handle(request)

    # -- test helpers: play the kubelet and the controllers --------------------------------

    def pod(self, name: str) -> Any:
        return self.objects["v1/pods", NAMESPACE, name]

    def has(self, resource: str, name: str) -> bool:
        # ObjectsArray's `in` does not parse "v1/pods"-style keys; indexing does.
        try:
            obj = self.objects[resource, NAMESPACE, name]
        except KeyError:
            return False
        return not obj.deleted

    def created(self, resource: str, name: str) -> dict[str, Any] | None:
        """The object as it was created through the API, even once deleted: an elastic pod
        is gone as soon as its execution finished, which on a busy machine can be before a
        test that polls ``has`` looks."""
        plural = resource.rsplit("/", 1)[-1]
        for _, recorded, namespace, kind, raw in list(self.history):
            if (kind == "ADDED" and getattr(recorded, "plural", None) == plural
                    and namespace == NAMESPACE and raw["metadata"].get("name") == name):
                return raw
        return None

    def update(self, resource: str, namespace: str, name: str,
               changes: Mapping[str, Any]) -> None:
        """Patch an object as a controller or the kubelet would: a new resourceVersion, and
        a MODIFIED event for the watches."""
        obj = self.objects[resource, namespace, name]
        obj.patch({**changes, "metadata": {**dict(changes.get("metadata") or {}),
                                           "resourceVersion": str(self._next_version())}})
        self._record(kmock.resource(resource), "MODIFIED", obj.raw)

    def record_added(self, resource: str, namespace: str, name: str) -> None:
        """An object the test stored directly (``objects[...] = ...``), announced to the
        watches as created."""
        obj = self.objects[resource, namespace, name]
        obj.patch({"metadata": {"resourceVersion": str(self._next_version())}})
        self._record(kmock.resource(resource), "ADDED", obj.raw)

    def remove(self, resource: str, namespace: str, name: str) -> None:
        """Delete an object from outside the API (a user's kubectl, the garbage collector)."""
        obj = self.objects[resource, namespace, name]
        raw = obj.raw
        obj.delete()
        self._record(kmock.resource(resource), "DELETED", raw)

    def set_pod_status(self, name: str, status: Mapping[str, Any], node: str | None = None) -> None:
        changes: dict[str, Any] = {"status": dict(status)}
        if node is not None:
            changes["spec"] = {"nodeName": node}
        self.update("v1/pods", NAMESPACE, name, changes)

    def add_pod(self, name: str, labels: Mapping[str, str], status: Mapping[str, Any],
                annotations: Mapping[str, str] | None = None,
                created: str = "2026-11-23T12:00:00Z") -> None:
        self.objects["v1/pods", NAMESPACE, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels),
                         "annotations": dict(annotations or {}),
                         "creationTimestamp": created,
                         "resourceVersion": str(self._next_version())},
            "spec": {"containers": [{"name": "runner", "image": "img"}]},
            "status": dict(status),
        }
        obj = self.objects["v1/pods", NAMESPACE, name]
        self._record(kmock.resource("v1/pods"), "ADDED", obj.raw)

    def serve_logs(self, pod: str, text: str) -> None:
        self["get", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << text.encode()

    def sent(self, method: str, resource: str | None = None) -> list[kmock.Request]:
        """The requests of one HTTP method (optionally on one resource plural)."""
        return [
            request
            for request in self
            if request.method.value.lower() == method.lower()
            and (resource is None or (request.resource and request.resource.plural == resource))
        ]


def write_kubeconfig(server_url: str, path: Path, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig for the emulator: clients connect as they would to kind."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "not-checked"}}],
        "contexts": [
            {
                "name": "kmock",
                "context": {"cluster": "kmock", "user": "test", "namespace": namespace},
            }
        ],
        "current-context": "kmock",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path
