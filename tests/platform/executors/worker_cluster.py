"""A test double for the cluster side of low-latency workers, over the kmock emulator.

kmock stores Deployments and pods but runs nothing. This double plays, for the worker
Deployments (``gm-ll-*``) in the emulator:

* the Deployment controller: ``replicas`` pods of the current pod template; a new template
  is a rollout (the new pod first, the old ones deleted once it is ready); the pods of a
  deleted Deployment are deleted; a pod deleted by someone else (an eviction) is replaced;
* the scheduler: a pod asking for a GPU stays Pending and Unschedulable (no GPU node here);
* the kubelet: the container is a real local process, the pod's command
  (``python -m gristmill.runtime serve``) with the pod's environment, on a port of its own
  on 127.0.0.1 (every pod would have its own IP); the pod is Ready once its readiness probe
  (path, port and headers from the pod spec) answers 200; a container that exits is
  restarted in place (``restartCount``, ``lastState.terminated`` with the end of its output
  as the message, as ``FallbackToLogsOnError`` does), and one that keeps failing before it
  was ever ready stays in ``CrashLoopBackOff``; a deleted pod gets SIGTERM and is removed
  once its process is gone; an image listed as missing never pulls (``ImagePullBackOff``);
  logs are served at ``/pods/<name>/log?timestamps=true``.

The image's ``python`` is this interpreter and its ``/app`` one step folder (``step_dir``),
or, given ``locate``, whatever it says for the pod (the behavioural suite's kubelet double
passes the pod's step's interpreter and code folder on the control service).

Everything runs on the test's event loop, the emulator's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gristmill_platform.executors.kubernetes.worker_pods import WorkerPod

TICK_S = 0.02
NODE = "node-a"
KILL_GRACE_S = 30.0
HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
MESSAGE_LINES = 80  # FallbackToLogsOnError keeps the end of the log
CRASH_LOOP_AFTER = 2  # failures in a row, never ready in between

# (pod) -> (python executable, code folder): what the pod's image would hold
PodLocator = Callable[[Mapping[str, Any]], tuple[str, Path]]


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return rfc3339(datetime.now(timezone.utc))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Container:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)  # "<rfc3339> <text>"
    reader: asyncio.Task[None] | None = None
    ready: bool = False


@dataclass
class FakePod:
    name: str
    deployment: str
    template_hash: str
    port: int  # where its server listens locally
    ip: str
    io_dir: Path
    container: Container | None = None
    restarts: int = 0
    failures_in_a_row: int = 0
    last_terminated: dict[str, Any] | None = None
    last_lines: list[str] = field(default_factory=list)  # its last container's log
    terminating: bool = False
    started: bool = False
    pids: list[int] = field(default_factory=list)


class WorkerCluster:
    def __init__(self, emulator: Any, namespace: str, step_dir: Path | None = None, *,
                 locate: PodLocator | None = None, missing_images: Iterable[str] = (),
                 unschedulable_since: str = "2026-11-23T12:00:00Z") -> None:
        if (step_dir is None) == (locate is None):
            raise ValueError("give the step folder or a locator, one of them")
        self.emulator = emulator
        self.namespace = namespace
        self.step_dir = step_dir
        self.locate = locate
        self.missing_images = set(missing_images)
        self.unschedulable_since = unschedulable_since
        self.pods: dict[str, FakePod] = {}
        self._names = itertools.count(1)
        self._scratch = Path(tempfile.mkdtemp(prefix="gristmill-worker-cluster-"))
        self._task: asyncio.Task[None] | None = None
        self._kills: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        # True: a rollout stops once its new pods are ready, the old ones still serving (a
        # moment a real rollout also goes through, held for as long as the test needs)
        self.hold_rollouts = False
        # set: pods are refused at admission (a ResourceQuota, a LimitRange), as the
        # ReplicaSet controller's create would be: none is made, and the Deployment
        # carries ReplicaFailure with this message, as the real controllers report it
        self.refuse_pods: str | None = None

    # -- test controls ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for pod in list(self.pods.values()):
            if pod.container is not None:
                await self._kill(pod.container, signal.SIGKILL)

    def address(self, pod: WorkerPod) -> tuple[str, int] | None:
        """The pool's address resolver: the pod's local port instead of its IP."""
        fake = self.pods.get(pod.name)
        return ("127.0.0.1", fake.port) if fake is not None else None

    def names(self, deployment: str | None = None) -> list[str]:
        return sorted(name for name, pod in self.pods.items()
                      if deployment is None or pod.deployment == deployment)

    def pid(self, pod_name: str) -> int | None:
        pod = self.pods.get(pod_name)
        if pod is None or pod.container is None:
            return None
        return pod.container.process.pid

    def evict(self, pod_name: str) -> None:
        """Delete the pod from the API at once, as an eviction or a lost node would."""
        self.emulator.remove("v1/pods", self.namespace, pod_name)

    # -- the loop --------------------------------------------------------------------------

    async def _forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as error:  # keep going; the test fails on its own
                self.errors.append(repr(error))
            await asyncio.sleep(TICK_S)

    def _objects(self, plural: str) -> dict[str, Any]:
        return {name: obj for (resource, namespace, name), obj in
                list(self.emulator.objects.items())
                if resource.plural == plural and namespace == self.namespace
                and not obj.deleted}

    async def tick(self) -> None:
        deployments = {name: obj for name, obj in self._objects("deployments").items()
                       if name.startswith("gm-ll-")}
        for name, obj in deployments.items():
            self._control(name, obj.raw)
        for pod in list(self.pods.values()):
            if pod.deployment not in deployments and not pod.terminating:
                self._delete(pod)
        objects = self._objects("pods")
        for pod in list(self.pods.values()):
            obj = objects.get(pod.name)
            if obj is None:  # deleted through the API: the node stops it now
                if pod.container is not None:
                    await self._kill(pod.container, signal.SIGKILL)
                self.pods.pop(pod.name, None)
            elif pod.terminating:
                if pod.container is None or pod.container.process.returncode is not None:
                    self.emulator.remove("v1/pods", self.namespace, pod.name)
                    self.pods.pop(pod.name, None)
            else:
                await self._kubelet(pod, obj)

    # -- the Deployment controller -----------------------------------------------------------

    def _control(self, name: str, deployment: Mapping[str, Any]) -> None:
        template = deployment["spec"]["template"]
        replicas = int(deployment["spec"].get("replicas", 1))
        template_hash = hashlib.sha256(
            json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        live = [p for p in self.pods.values() if p.deployment == name and not p.terminating]
        current = [p for p in live if p.template_hash == template_hash]
        if self.refuse_pods is not None and len(current) < replicas:
            if (deployment.get("status") or {}).get("conditions") is None:
                self.emulator.update("apps/v1/deployments", self.namespace, name, {
                    "status": {"conditions": [{
                        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                        "message": self.refuse_pods}]}})
            return
        for _ in range(replicas - len(current)):
            current.append(self._create(name, template_hash, template))
        ready = sum(1 for p in current if p.container is not None and p.container.ready)
        if ready >= replicas and not self.hold_rollouts:
            for pod in live:
                if pod.template_hash != template_hash:
                    self._delete(pod)

    def _create(self, deployment: str, template_hash: str, template: Mapping[str, Any]
                ) -> FakePod:
        number = next(self._names)
        name = f"{deployment}-{template_hash}-{number:05d}"
        metadata = template.get("metadata") or {}
        self.emulator.objects["v1/pods", self.namespace, name] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {**(metadata.get("labels") or {}),
                                    "pod-template-hash": template_hash},
                         "annotations": dict(metadata.get("annotations") or {}),
                         "creationTimestamp": _now()},
            "spec": json.loads(json.dumps(template["spec"])),
            "status": {"phase": "Pending"},
        }
        self.emulator.record_added("v1/pods", self.namespace, name)
        pod = FakePod(name=name, deployment=deployment, template_hash=template_hash,
                      port=_free_port(), ip=f"10.1.0.{number}",
                      io_dir=self._scratch / name / "io")
        self.pods[name] = pod
        self._serve_logs(pod)
        return pod

    def _delete(self, pod: FakePod) -> None:
        """A graceful delete: deletionTimestamp, SIGTERM, removed once the process is gone."""
        pod.terminating = True
        with contextlib.suppress(KeyError):
            self._patch(pod.name, {"metadata": {"deletionTimestamp": _now()}})
        if pod.container is not None and pod.container.process.returncode is None:
            task = asyncio.get_running_loop().create_task(
                self._kill(pod.container, signal.SIGTERM))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)

    def _patch(self, name: str, changes: Mapping[str, Any]) -> None:
        """As the controllers and the kubelet write a pod: a new resourceVersion, and an
        event for the watches (the pool follows warm workers through one)."""
        self.emulator.update("v1/pods", self.namespace, name, changes)

    # -- the scheduler and the kubelet -------------------------------------------------------

    async def _kubelet(self, pod: FakePod, obj: Any) -> None:
        raw = obj.raw
        spec = raw["spec"]
        container_spec = spec["containers"][0]
        if not pod.started:
            limits = (container_spec.get("resources") or {}).get("limits") or {}
            if any(key.endswith("/gpu") for key in limits):
                conditions = [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": self.unschedulable_since}]
                if (raw.get("status") or {}).get("conditions") != conditions:  # said once
                    self._patch(pod.name, {"status": {"phase": "Pending",
                                                      "conditions": conditions}})
                return
            image = container_spec["image"]
            if image in self.missing_images:
                waiting = {"reason": "ImagePullBackOff",
                           "message": f'Back-off pulling image "{image}"'}
                statuses = [self._container_status(pod, container_spec, {"waiting": waiting})]
                if (raw.get("status") or {}).get("containerStatuses") != statuses:
                    self._patch(pod.name, {"spec": {"nodeName": NODE}, "status": {
                        "phase": "Pending", "conditions": [
                            {"type": "PodScheduled", "status": "True"}],
                        "containerStatuses": statuses}})
                return
            pod.started = True
            await self._run(pod, raw)
            return
        container = pod.container
        if container is None:
            return  # in CrashLoopBackOff
        if container.process.returncode is not None:
            await self._exited(pod, raw, container)
            return
        if not container.ready and await self._probe(pod, container_spec):
            container.ready = True
            pod.failures_in_a_row = 0
            self._status(pod, raw, running=True)

    async def _run(self, pod: FakePod, raw: Mapping[str, Any]) -> None:
        container_spec = raw["spec"]["containers"][0]
        env: dict[str, str] = {}
        fields = {"metadata.name": pod.name, "spec.nodeName": NODE}
        for item in container_spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            else:
                env[item["name"]] = fields.get(item["valueFrom"]["fieldRef"]["fieldPath"], "")
        pod.io_dir.mkdir(parents=True, exist_ok=True)
        if self.locate is not None:
            python, step_dir = self.locate(raw)
        else:
            assert self.step_dir is not None
            python, step_dir = sys.executable, self.step_dir
        env.update(
            GRISTMILL_WORKER_PORT=str(pod.port),  # the pod's own IP would allow the same port
            GRISTMILL_WORKER_HOST="127.0.0.1",  # not every interface of the test machine
            GRISTMILL_STEP_DIR=str(step_dir),  # the image's /app
            GRISTMILL_IO_DIR=str(pod.io_dir),
            # serve exits once orphaned: a test process killed before its teardown leaves
            # no worker behind (pods have no such parent)
            GRISTMILL_WORKER_PARENT_PID=str(os.getpid()),
        )
        command = list(container_spec["command"])
        if command[0] == "python":
            command[0] = python
        process = await asyncio.create_subprocess_exec(
            *command, env={**{k: v for k, v in os.environ.items() if k in HOST_ENV}, **env},
            cwd=str(step_dir), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        container = Container(process)
        container.reader = asyncio.get_running_loop().create_task(self._read(container))
        pod.container = container
        pod.pids.append(process.pid)
        self._status(pod, raw, running=True)

    async def _exited(self, pod: FakePod, raw: Mapping[str, Any], container: Container) -> None:
        if container.reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(container.reader), 1.0)
        code = container.process.returncode
        assert code is not None
        exit_code = 128 - code if code < 0 else code
        terminated: dict[str, Any] = {
            "exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
            "finishedAt": _now()}
        if exit_code:
            terminated["message"] = "\n".join(
                line.partition(" ")[2] for line in container.lines[-MESSAGE_LINES:])
        pod.last_terminated = terminated
        pod.last_lines = container.lines
        pod.restarts += 1
        pod.failures_in_a_row += 0 if container.ready else 1
        pod.container = None
        if pod.failures_in_a_row >= CRASH_LOOP_AFTER:
            self._status(pod, raw, running=False)  # CrashLoopBackOff: no more tries here
            return
        await self._run(pod, raw)

    def _status(self, pod: FakePod, raw: Mapping[str, Any], *, running: bool) -> None:
        container_spec = raw["spec"]["containers"][0]
        ready = bool(running and pod.container is not None and pod.container.ready)
        state: dict[str, Any] = ({"running": {"startedAt": _now()}} if running else
                                 {"waiting": {"reason": "CrashLoopBackOff",
                                              "message": "back-off restarting failed container"}})
        status = self._container_status(pod, container_spec, state)
        status["ready"] = ready
        self._patch(pod.name, {
            "spec": {"nodeName": NODE},
            "status": {"phase": "Running", "podIP": pod.ip, "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [status]}})

    def _container_status(self, pod: FakePod, container_spec: Mapping[str, Any],
                          state: Mapping[str, Any]) -> dict[str, Any]:
        status: dict[str, Any] = {"name": container_spec["name"],
                                  "image": container_spec["image"],
                                  "restartCount": pod.restarts, "state": dict(state),
                                  "ready": False}
        if pod.last_terminated is not None:
            status["lastState"] = {"terminated": pod.last_terminated}
        return status

    async def _probe(self, pod: FakePod, container_spec: Mapping[str, Any]) -> bool:
        """The readiness probe as the pod spec declares it."""
        probe = container_spec["readinessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container_spec.get("ports") or []}
        assert probe["port"] in ports, "the probe names a port the container declares"
        headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in probe.get("httpHeaders") or [])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", pod.port)
        except OSError:
            return False
        try:
            writer.write(f"GET {probe['path']} HTTP/1.1\r\nHost: {pod.ip}\r\n{headers}"
                         "Connection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), 5)
            return line.split(b" ")[1:2] == [b"200"]
        except (OSError, asyncio.TimeoutError, IndexError):
            return False
        finally:
            writer.close()

    async def _read(self, container: Container) -> None:
        assert container.process.stdout is not None
        async for raw in container.process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            container.lines.append(f"{_now()} {text}")

    def _serve_logs(self, pod: FakePod) -> None:
        def logs() -> bytes:
            lines = pod.container.lines if pod.container is not None else pod.last_lines
            return "".join(f"{line}\n" for line in lines).encode()

        self.emulator["get", f"/api/v1/namespaces/{self.namespace}/pods/{pod.name}/log"] << logs

    async def _kill(self, container: Container, first: int) -> None:
        process = container.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first)
        try:
            await asyncio.wait_for(process.wait(), KILL_GRACE_S)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
