"""A kubelet double for the kmock emulator: runs the pods the control service creates as
local processes and writes their status and logs back, as a node would.

kmock stores pods but never runs them, and step images cannot be built here. So the
double stands at the edge, where a node would be:

* a new elastic pod's container command runs locally with the pod's environment; the
  image's ``python`` is the step's interpreter and its ``/app`` the step's code folder on
  the control service (``state.builds.code_dir``), its I/O volume a temporary folder;
  given ``container``, it runs in a real image instead (tests/images: podman), with the
  code folder as ``/app`` and the I/O folder at the pod's mount;
* the pod goes Running, then Succeeded or Failed with the exit code, ``OOMKilled`` when
  the process died of SIGKILL (what the kernel's OOM killer sends), ``DeadlineExceeded``
  when ``activeDeadlineSeconds`` ran out (this is also how the executor cancels);
* its output is served at ``/pods/<name>/log?timestamps=true``;
* a pod asking for a GPU stays Pending, unschedulable: the double has no GPU;
* a deleted pod's process is stopped;
* image build Jobs succeed at once (the image itself is never built);
* the worker Deployments of low-latency deployments (``gm-ll-*``), given ``workers``: the
  controller and kubelet double of tests/platform/executors/worker_cluster.py runs each
  one's pod as a real ``python -m gristmill.runtime serve`` process on a port of its own
  (``WorkerCluster.address`` is the pool's address resolver), with the step's interpreter
  and code folder as its image's ``python`` and ``/app``.

Everything runs on the emulator's event loop, in the emulator's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmock._internal.k8s import KubernetesObjectNotFoundError

from tests.platform.executors.emulator import Emulator
from tests.platform.executors.worker_cluster import WorkerCluster

NODE = "kubelet-double"
TICK_S = 0.05
KILL_GRACE_S = 3.0
# The environment an image gives its processes besides the pod's variables.
HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
# FallbackToLogsOnError: the termination message is the end of the log.
MESSAGE_LINES = 80

# (pod env) -> (python executable, code folder) for the pod's execution
Locator = Callable[[Mapping[str, str]], tuple[str, Path]]
# (pod, pod env, code folder, I/O folder) -> the command that runs the pod's container in
# its image (tests/images runs it with podman); without one, the command runs locally
ContainerRunner = Callable[[Mapping[str, Any], Mapping[str, str], Path, Path], list[str]]


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_env(pod: Mapping[str, Any]) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    fields = {"metadata.name": pod["metadata"]["name"], "spec.nodeName": NODE}
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = fields.get(item["valueFrom"]["fieldRef"]["fieldPath"], "")
    return env


def wants_gpu(pod: Mapping[str, Any]) -> bool:
    limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return any(key.endswith("/gpu") for key in limits)


@dataclass
class RunningPod:
    name: str
    process: asyncio.subprocess.Process
    started: datetime
    lines: list[str] = field(default_factory=list)
    stopped_for_deadline: bool = False
    done: bool = False


class KubeletDouble:
    def __init__(self, emulator: Emulator, namespace: str, locate: Locator,
                 workers: WorkerCluster | None = None,
                 container: ContainerRunner | None = None) -> None:
        self.emulator = emulator
        self.namespace = namespace
        self.locate = locate
        self.container = container
        self.workers = workers  # runs the pods of worker Deployments
        self.seen: set[str] = set()
        self.running: dict[str, RunningPod] = {}
        self.pids: dict[str, int] = {}  # pod name -> pid of its process, for tests
        self.jobs_done: set[str] = set()
        self._finished_lines: dict[str, list[str]] = {}  # pod name -> log, once exited
        self._scratch = Path(tempfile.mkdtemp(prefix="gristmill-kubelet-"))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())
        if self.workers is not None:
            self.workers.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for pod in list(self.running.values()):
            await self._kill(pod)
        if self.workers is not None:
            await self.workers.stop()

    async def _forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as error:  # keep the node alive; the test will fail on its own
                print(f"kubelet double: {error!r}")
            await asyncio.sleep(TICK_S)

    def _pods(self) -> dict[str, Any]:
        pods = {}
        for (resource, namespace, name), obj in list(self.emulator.objects.items()):
            if resource.plural == "pods" and namespace == self.namespace and not obj.deleted:
                pods[name] = obj
        return pods

    async def tick(self) -> None:
        pods = self._pods()
        for name, obj in pods.items():
            if name not in self.seen:
                self.seen.add(name)
                await self._admit(name, obj)
        for name, pod in list(self.running.items()):
            obj = pods.get(name)
            if obj is None:  # deleted: the node stops its containers
                await self._kill(pod)
                self.running.pop(name, None)
                continue
            deadline = (obj.raw.get("spec") or {}).get("activeDeadlineSeconds")
            if (isinstance(deadline, int) and not pod.stopped_for_deadline
                    and (datetime.now(timezone.utc) - pod.started).total_seconds() > deadline):
                pod.stopped_for_deadline = True
                asyncio.get_running_loop().create_task(self._kill(pod))
        for (resource, namespace, name), obj in list(self.emulator.objects.items()):
            if (resource.plural == "jobs" and namespace == self.namespace
                    and not obj.deleted and name not in self.jobs_done):
                self.jobs_done.add(name)
                # through the emulator: the build watch sees the Job end
                self.emulator.update("batch/v1/jobs", namespace, name, {"status": {
                    "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})

    async def _admit(self, name: str, obj: Any) -> None:
        pod = obj.raw
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get("gristmill.io/mode") not in ("elastic", "elastic-pool"):
            return  # build pods and warm workers are not run by this double
        self._serve_logs(name)
        if wants_gpu(pod):
            self._patch(name, {"status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                # long ago: whatever the patience configured, no GPU node is coming
                "lastTransitionTime": "2000-01-01T00:00:00Z"}]}})
            return
        env = pod_env(pod)
        python, code = self.locate(env)
        io_dir = self._scratch / name / "io"
        io_dir.mkdir(parents=True)
        host_env = {k: v for k, v in os.environ.items() if k in HOST_ENV}
        if self.container is not None:
            command = self.container(pod, env, code, io_dir)
            env = {}
        else:
            env["GRISTMILL_STEP_DIR"] = str(code)  # the image's /app
            if "GRISTMILL_IO_DIR" in env:
                env["GRISTMILL_IO_DIR"] = str(io_dir)
            command = list(pod["spec"]["containers"][0]["command"])
            if command[0] == "python":
                command[0] = python
        process = await asyncio.create_subprocess_exec(
            *command, env={**host_env, **env},
            cwd=str(code), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        running = RunningPod(name, process, datetime.now(timezone.utc))
        self.running[name] = running
        self.pids[name] = process.pid
        self._patch(name, {"spec": {"nodeName": NODE}, "status": {
            "phase": "Running", "startTime": rfc3339(running.started),
            "containerStatuses": [{"name": "runner", "image": pod["spec"]["containers"][0][
                "image"], "state": {"running": {"startedAt": rfc3339(running.started)}}}]}})
        asyncio.get_running_loop().create_task(self._follow(running))

    def _patch(self, name: str, changes: dict[str, Any]) -> None:
        """As the kubelet writes a pod's status: a new resourceVersion, a watch event."""
        self.emulator.update("v1/pods", self.namespace, name, changes)

    def _serve_logs(self, name: str) -> None:
        def logs() -> bytes:
            pod = self.running.get(name)
            if pod is None and name not in self.pids:
                raise KubernetesObjectNotFoundError()  # no container started: no log
            lines = pod.lines if pod is not None else self._finished_lines.get(name, [])
            return "".join(f"{line}\n" for line in lines).encode()

        self.emulator["get", f"/api/v1/namespaces/{self.namespace}/pods/{name}/log"] << logs

    async def _follow(self, pod: RunningPod) -> None:
        assert pod.process.stdout is not None
        async for raw in pod.process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            pod.lines.append(f"{rfc3339(datetime.now(timezone.utc))} {text}")
        code = await pod.process.wait()
        pod.done = True
        self._finished_lines[pod.name] = pod.lines
        self.running.pop(pod.name, None)
        self._terminate(pod, code)

    def _terminate(self, pod: RunningPod, code: int) -> None:
        objects = self._pods()
        obj = objects.get(pod.name)
        if obj is None:
            return
        finished = rfc3339(datetime.now(timezone.utc))
        terminated: dict[str, Any] = {"finishedAt": finished}
        status: dict[str, Any] = {}
        if code == 0:
            status["phase"] = "Succeeded"
            terminated.update(exitCode=0, reason="Completed")
        else:
            status["phase"] = "Failed"
            exit_code = 128 - code if code < 0 else code
            terminated["exitCode"] = exit_code
            if pod.stopped_for_deadline:
                status.update(reason="DeadlineExceeded",
                              message="Pod was active on the node longer than the specified "
                              "deadline")
                terminated["reason"] = "Error"
            elif code == -signal.SIGKILL:
                terminated["reason"] = "OOMKilled"
            else:
                terminated["reason"] = "Error"
                tail = [line.partition(" ")[2] for line in pod.lines[-MESSAGE_LINES:]]
                terminated["message"] = "\n".join(tail)
        status["containerStatuses"] = [{"name": "runner", "image": "step",
                                        "state": {"terminated": terminated}}]
        self._patch(pod.name, {"status": status})

    async def _kill(self, pod: RunningPod) -> None:
        """As the kubelet stops a container: SIGTERM, then SIGKILL after the grace."""
        if pod.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(pod.process.wait(), KILL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
