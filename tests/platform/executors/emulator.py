"""A Kubernetes API emulator (kmock) with what a real API server always does, and a
kubeconfig that points at it. Shared by the executor tests (tests/platform/executors) and
the behavioural suite (tests/platform/backends), which serves it from a thread of its own.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kmock
from kmock._internal import enums

NAMESPACE = "gm-test"


class Emulator(kmock.KubernetesEmulator):
    """kmock plus what a real API server always does and kr8s relies on.

    kmock 0.8 never stamps uid, resourceVersion, creationTimestamp or the URL's namespace,
    never bumps a Deployment's generation when its spec changes, and answers 404 to lists of
    a resource it holds no object of.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        # A real server lists an empty collection; kmock answers 404 for a resource it has
        # never seen an object of, unless the resource is declared.
        for resource, kind in (
            ("v1/pods", "Pod"),
            ("v1/services", "Service"),
            ("apps/v1/deployments", "Deployment"),
            ("batch/v1/jobs", "Job"),
        ):
            self.resources[resource] = {"namespaced": True, "kind": kind}
        self["get /version/"] << {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        self["get /api/"] << {"kind": "APIVersions", "versions": ["v1"]}
        self["get /apis/"] << {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            version = str(next(self._versions))
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

    def set_pod_status(self, name: str, status: Mapping[str, Any], node: str | None = None) -> None:
        changes: dict[str, Any] = {"status": dict(status)}
        if node is not None:
            changes["spec"] = {"nodeName": node}
        self.pod(name).patch(changes)

    def add_pod(self, name: str, labels: Mapping[str, str], status: Mapping[str, Any]) -> None:
        self.objects["v1/pods", NAMESPACE, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
            "spec": {"containers": [{"name": "runner", "image": "img"}]},
            "status": dict(status),
        }

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
