"""Low-latency deployments on this machine: warm worker processes per deployment (one by
default; ``local_warm_workers`` of them, each in a pool slot of its own, see ``replicas``).

A worker is the runner's server mode (``python -m gristmill.runtime serve``) in the step's
virtual environment, listening on a Unix socket of its own (a loopback TCP round trip costs
several times more, on every execution), with a secret only this control service knows. The pool

* starts it, polls ``/healthz`` until the step module is imported, and records the outcome
  on the deployment: ``up``, or ``creation_failed`` with the import error as the reason;
* keeps what the worker prints outside executions (module-level output, crash dumps) as
  the deployment's logs;
* carries executions to it (``run``): at most the deployment's parallelism at a time, the
  others wait in line; what they record is up to the caller (executions/low_latency.py);
* notices when it dies: the executions it was running fail with the reason, a new worker
  starts (``down_retrying``, then ``up``), and one that keeps dying ends ``creation_failed``;
* rolls it on update_deployment: the new worker starts, takes the new executions, and the
  old one stops once the executions it runs are over;
* replaces it when an execution ran past the deployment's execution timeout (``replace``):
  at once it takes no new executions, a new worker starts, and the old one stops once the
  other executions it runs are over, the abandoned call with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gristmill_platform.db.models.steps import Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.executors.deployment_logs import (
    DeploymentLogBuffer,
    DeploymentLogSink,
    DeploymentRecordsFor,
    record_status,
)
from gristmill_platform.executors.local import exit_outcome
from gristmill_platform.executors.spec import PASSED_ENV
from gristmill_platform.executors.worker_client import WorkerClient, WorkerUnreachable
from gristmill_platform.executors.workers import (
    ExecutionLost,
    StartHook,
    Version,
    WorkerAnswer,
    node_step,
    replica_key,
    replica_of,
    split_key,
    variant_key,
)
from gristmill_platform.steps.environments import python_of
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.telemetry.metrics import WORKER_RESTARTS
from gristmill_platform.timeouts import within


class StepBuildsView(Protocol):
    """What a worker needs of the step builds (steps/builds.py StepBuilds)."""

    def code_dir(self, step_id: str) -> Path: ...

    def environment_dir(self, key: str) -> Path: ...

    async def wait(self, step_id: str, timeout: float) -> None: ...

log = logging.getLogger("gristmill.workers")

# The niceness of workers that only run shadow copies (docs/rollout.md): on a busy
# machine the scheduler serves the answering workers and the control service first, and
# a woken shadow worker does not preempt them.
BACKGROUND_NICE = 19
# Module imports that load a model can take minutes; past this the start has failed.
START_TIMEOUT_S = 1800.0
HEALTH_POLL_FIRST_S = 0.005
HEALTH_POLL_MAX_S = 0.1
# Restarts tried in a row (after a crash, or after a restart that failed) with no execution
# answered in between; the next failure is final: creation_failed.
MAX_RESTARTS_IN_A_ROW = 3
KILL_GRACE_S = 5.0
# Executions still running on a worker replaced by update_deployment get this long.
DRAIN_TIMEOUT_S = 600.0
# Under the reconciler's 45 s: executions waiting in line or running on a worker are
# alive as long as the pool holds them.
HEARTBEAT_S = 10.0
LOG_FLUSH_S = 0.5
MAX_LOG_LINE = 16_384
TAIL_LINES = 50
READY_BANNER = "[gristmill] worker ready"  # gristmill.runtime.serve prints it once


def _backoff(failures: int) -> float:
    # The first restart at once (a crash caused by one request should cost the next ones
    # nothing), then 0.5 s, 1 s, 2 s...
    return 0.0 if failures <= 1 else min(30.0, 0.5 * 2 ** (failures - 2))


def _socket_path() -> Path:
    """A fresh path for a worker's Unix socket: short (a socket path holds at most 107
    bytes, a data directory can be longer), in a folder only this user may enter."""
    folder = Path(tempfile.gettempdir()) / f"gristmill-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise RuntimeError(f"{folder} must belong to this user with mode 700")
    return folder / f"{secrets.token_hex(8)}.sock"


class PodIds:
    """The pod id of each worker a pool starts: local-<key>-<generation>, then -1, -2...
    for the next workers of that key and generation: after a crash or a replacement, and
    on a roll at an unchanged generation (a variant's pipeline, a node's step, or the
    deployment itself deleted and created again under its name). Executions record it,
    the deployment logs and a timed-out execution's replace go by it: two workers of one
    process never share one. One count per (key, generation) ever started: a few bytes
    per roll."""

    def __init__(self) -> None:
        self._started: dict[tuple[str, int], int] = {}

    def next(self, key: str, generation: int) -> str:
        number = self._started.get((key, generation), 0)
        self._started[(key, generation)] = number + 1
        return f"local-{key}-{generation}" + (f"-{number}" if number else "")


def own_folder(pod_folder: Path) -> Path:
    """The io folder of a new worker: <pod folder>/<a fresh name>/io. A folder of its own
    even when another worker has the same pod id (another control service sharing the
    data directory runs its own workers of the deployment under the same ids), so that
    removing a stopped worker's never removes a running one's files."""
    for _ in range(3):
        pod_folder.mkdir(parents=True, exist_ok=True)
        try:
            own = Path(tempfile.mkdtemp(dir=pod_folder))
        except FileNotFoundError:  # removed meanwhile, once empty (remove_own_folder)
            continue
        (own / "io").mkdir()
        return own / "io"
    raise RuntimeError(f"could not make a folder in {pod_folder}")


def remove_own_folder(own: Path) -> None:
    """A stopped worker's folder, and its pod's folder once no other worker uses it."""
    shutil.rmtree(own, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: another worker's folder is in it
        own.parent.rmdir()


@dataclass(frozen=True)
class _Record:
    """What a worker is started from, read in one transaction."""

    deployment_id: str
    name: str
    generation: int
    is_enabled: bool
    max_parallel: int
    step: Step  # detached: name, function_path, function_name for ExecutionService.start
    python: Path
    code: Path
    variables: dict[str, str]


class _Worker:
    def __init__(self, record: _Record, pod_id: str, socket_path: Path, secret: str,
                 process: asyncio.subprocess.Process, io_root: Path) -> None:
        self.deployment_id = record.deployment_id
        self.name = record.name
        self.generation = record.generation
        self.step = record.step
        self.pod_id = pod_id
        self.socket_path = socket_path
        self.process = process
        self.io_root = io_root
        # keep-alive connections: as many as executions run at once, plus health checks
        self.client = WorkerClient(0, secret, host="localhost", unix_path=str(socket_path))
        self.slots = asyncio.Semaphore(record.max_parallel)
        self.status = "starting"  # starting | running | failed | stopped
        self.retired = False  # replaced or stopped: takes no new executions
        self.stopping = False  # we are stopping it: its exit is no crash
        self.inflight = 0
        self.load = 0  # executions running on it or waiting for one of its places
        self.idle = asyncio.Event()
        self.idle.set()
        self.exited = asyncio.Event()
        self.returncode: int | None = None
        # its last lines, numbered: a crash is explained by what came after the import
        self.tail: deque[tuple[int, str]] = deque(maxlen=TAIL_LINES)
        self.lines = 0
        self.ready_at = 0
        self.tasks: list[asyncio.Task[None]] = []

    def exit_reason(self) -> str:
        if self.returncode is None:
            return "the worker is still running"
        reason = exit_outcome(self.returncode).reason or "the worker exited"
        last = self.last_line(self.ready_at)
        return f"{reason}; its last output: {last}" if last else reason

    def output_since(self, line: int) -> list[str]:
        return [text for number, text in self.tail
                if number >= line and not text.startswith(READY_BANNER)]

    def last_line(self, since: int = 0) -> str | None:
        return next((text for text in reversed(self.output_since(since)) if text.strip()), None)


def _started_from(worker: _Worker, record: _Record) -> bool:
    return (worker.deployment_id, worker.generation, worker.step.id) == (
        record.deployment_id, record.generation, record.step.id)


class _Slot:
    """One low-latency deployment's workers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.deployment_id: str | None = None
        self.lock = asyncio.Lock()
        self.current: _Worker | None = None  # serving executions
        self.starting: _Worker | None = None  # being brought up (first start, roll, restart)
        self.draining: set[_Worker] = set()  # replaced, finishing their executions
        self.last_failed: _Worker | None = None
        self.bring_up: asyncio.Task[None] | None = None
        self.failed = False  # creation_failed: executions fail at once
        self.stopped = False
        # a worker is on its way although none is starting yet: resumed at start-up, or
        # restarting after a crash (backoff)
        self.resuming = False
        self.restarting = False
        self.failures = 0
        self.failure: str | None = None  # why it ended creation_failed
        self.background = False  # its workers start at a low CPU priority (ensure)
        self.launched: Version | None = None  # what its last worker was started from
        self.changed = asyncio.Event()

    @property
    def expecting(self) -> bool:
        """Will a worker serve soon, so that executions should wait for it?"""
        return bool(self.starting or self.bring_up or self.resuming or self.restarting)

    def pulse(self) -> None:
        """Wake the dispatches waiting for a worker to serve them."""
        self.changed.set()
        self.changed = asyncio.Event()


async def _wait_for_bring_up(slot: _Slot, task: asyncio.Task[None], wait_s: float) -> None:
    """Wait up to wait_s for the slot's worker to come up. A newer start of the slot
    cancels the bring-up waited on (_launch: a deployment's update and its follower, or a
    call, rolling at once): the wait then goes on with the newer one, where it used to
    end the caller's request with the cancellation (a 500)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            await within(asyncio.shield(task), max(0.0, deadline - loop.time()))
            return
        except TimeoutError:
            return
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise  # the caller itself is being cancelled
            newer = slot.bring_up
            if newer is None or newer is task:
                return  # stopped, or up already by a newer start that ended
            task = newer


class LocalWorkerPool:
    """The WorkerPool of the local backend (see workers.py for the contract)."""

    def __init__(self, transactions: Transactions, deployments: DeploymentRecordsFor,
                 logs: DeploymentLogSink, builds: StepBuildsView, *, data_dir: Path,
                 environment_url: str, replicas: int = 1) -> None:
        if replicas < 1:
            raise ValueError("a low-latency deployment needs at least one warm worker")
        self.transactions = transactions
        # Warm workers per key. Each is a slot of its own (workers.replica_key), with its own
        # start, crash restarts, roll and replacement; the first one's outcome is the
        # deployment's status, the others only log theirs. A call goes to the serving one
        # with the fewest executions (_choose).
        self.replicas = replicas
        self.deployments = deployments
        self.builds = builds
        self.data_dir = data_dir
        self.environment_url = environment_url
        self._slots: dict[str, _Slot] = {}
        self._names: dict[str, str] = {}  # deployment id -> name
        self._pod_ids = PodIds()
        self._adopting: dict[str, asyncio.Task[_Slot | None]] = {}
        self._logs = DeploymentLogBuffer(logs)
        self._background: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- WorkerPool ---------------------------------------------------------------------------

    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False, background: bool = False) -> None:
        await asyncio.gather(*(self._ensure_one(replica_key(deployment_name, number),
                                                wait_s=wait_s, restart=restart,
                                                background=background)
                               for number in range(self.replicas)))

    async def _ensure_one(self, deployment_name: str, *, wait_s: float, restart: bool,
                          background: bool) -> None:
        self._start_background()
        slot = self._slots.setdefault(deployment_name, _Slot(deployment_name))
        async with slot.lock:
            record = await self._load(deployment_name)
            # stopped: deleted meanwhile (a new deployment of that name gets a new slot)
            if record is None or slot.stopped or self._closing:
                return
            starting = slot.starting
            # A restart while a worker starts from this very record, at the same priority
            # (executors/following.py, or a call, rolling to an update made through
            # another control service, just before update_deployment's own roll here):
            # that start is the restart; a second would start the same pod again.
            rolling = (restart and starting is not None and starting.status == "starting"
                       and _started_from(starting, record) and slot.background == background)
            slot.background = background  # for the workers started from now on
            slot.deployment_id = record.deployment_id
            if split_key(deployment_name)[1] is None and replica_of(deployment_name)[1] == 0:
                self._names[record.deployment_id] = deployment_name
            live = slot.starting or slot.current
            # another id: the deployment was deleted and created again under its name
            # (through another control service sharing the database)
            if rolling or (not restart and live is not None
                           and live.generation == record.generation
                           and live.deployment_id == record.deployment_id
                           and live.status in ("starting", "running")):
                task = slot.bring_up
            else:
                slot.failures = 0
                task = await self._launch(slot, record, after_crash=False)
        if task is not None and wait_s > 0:
            await _wait_for_bring_up(slot, task, wait_s)

    async def stop(self, deployment_name: str) -> None:
        if split_key(deployment_name)[1] is None:  # its variants' workers go with it
            prefix = variant_key(deployment_name, "")
            await asyncio.gather(*(self.stop(key) for key in list(self._slots)
                                   if key.startswith(prefix)))
        if replica_of(deployment_name)[1] == 0:  # its other warm workers
            await asyncio.gather(*(self.stop(key) for key in list(self._slots)
                                   if key != deployment_name
                                   and replica_of(key)[0] == deployment_name))
        slot = self._slots.pop(deployment_name, None)
        if slot is None:
            return
        slot.stopped = True
        slot.pulse()
        if slot.deployment_id:
            self._names.pop(slot.deployment_id, None)
        if slot.bring_up is not None:
            slot.bring_up.cancel()
        workers = [w for w in (slot.starting, slot.current, *slot.draining) if w is not None]
        await asyncio.gather(*(self._terminate(w) for w in workers))

    def deployment_names(self) -> list[str]:
        return [key for key in self._slots if replica_of(key)[1] == 0]

    def versions(self, deployment_name: str) -> set[Version]:
        found: set[Version] = set()
        for number in range(self.replicas):
            slot = self._slots.get(replica_key(deployment_name, number))
            # resuming: it starts from the record it reads once its step is built
            if slot is None or slot.stopped or slot.resuming:
                continue
            for worker in (slot.current, slot.starting):
                if worker is not None and not worker.retired:
                    found.add((worker.deployment_id, worker.generation))
            if slot.current is None and slot.starting is None and slot.launched is not None:
                found.add(slot.launched)  # restarting after a crash, or creation_failed
        return found

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        return [pod for number in range(self.replicas)
                for pod in self._pods(replica_key(deployment_name, number))]

    def _pods(self, key: str) -> list[dict[str, Any]]:
        slot = self._slots.get(key)
        if slot is None:
            return []
        workers = [w for w in (slot.current, slot.starting) if w is not None]
        if not workers and slot.last_failed is not None:
            workers = [slot.last_failed]
        return [{"pod_id": w.pod_id, "status": w.status} for w in workers]

    def verdict(self, key: str) -> tuple[str, str | None]:
        """Up when any of its warm workers is; otherwise the first one's verdict."""
        verdicts = [self._verdict(replica_key(key, number)) for number in range(self.replicas)]
        return next((v for v in verdicts if v[0] == "up"), verdicts[0])

    def _verdict(self, key: str) -> tuple[str, str | None]:
        slot = self._slots.get(key)
        if slot is None or slot.stopped:
            return "failed", "the worker is not running"
        worker = slot.current
        if slot.starting is None and slot.bring_up is None and worker is not None \
                and worker.status == "running" and not worker.retired:
            return "up", None  # (a roll's new worker is not up before it serves)
        if slot.failed or not slot.expecting:
            failed = slot.last_failed
            return "failed", slot.failure or (failed.exit_reason() if failed is not None
                                              else "the worker could not be started")
        return "starting", None

    async def run(self, deployment_name: str, start: StartHook) -> WorkerAnswer | None:
        if self._slots.get(deployment_name) is None and not self._closing:
            await self._adopt(deployment_name)
        while True:
            slot = self._choose(deployment_name)
            worker = await self._serving(slot)
            if worker is None:
                raise ExecutionLost(self._unavailable(slot))
            worker.load += 1
            try:
                async with worker.slots:
                    if worker.retired or worker.status != "running":
                        continue  # replaced or crashed while this one waited in line
                    worker.inflight += 1
                    worker.idle.clear()
                    try:
                        return await self._run_on(worker, start)
                    finally:
                        worker.inflight -= 1
                        if worker.inflight == 0:
                            worker.idle.set()
            finally:
                worker.load -= 1

    def _choose(self, key: str) -> _Slot | None:
        """The slot of the serving warm worker with the fewest executions (running or
        waiting for a place; the first on a tie, whose caches are warmest), or the first
        slot's when none serves (the call waits for it there)."""
        if self.replicas == 1:
            return self._slots.get(key)
        best: _Slot | None = None
        least = 0
        for number in range(self.replicas):
            slot = self._slots.get(replica_key(key, number))
            worker = slot.current if slot is not None else None
            if worker is None or worker.status != "running" or worker.retired:
                continue
            if best is None or worker.load < least:
                best, least = slot, worker.load
        return best if best is not None else self._slots.get(key)

    def replace(self, deployment_name: str, pod_id: str, reason: str) -> None:
        for number in range(self.replicas):
            self._replace(replica_key(deployment_name, number), pod_id, reason)

    def _replace(self, deployment_name: str, pod_id: str, reason: str) -> None:
        slot = self._slots.get(deployment_name)
        worker = slot.current if slot is not None else None
        if slot is None or worker is None or worker.pod_id != pod_id or worker.retired:
            return  # replaced already: crashed, rolled, or another execution timed out
        worker.retired = True  # no new executions; those waiting in line wait for the next
        slot.current = None
        slot.restarting = True  # set before waking them: they wait for the new worker
        slot.pulse()
        self._log(worker, f"The worker is replaced: {reason}")
        self._spawn_task(self._drain(slot, worker))  # the others it runs still answer
        self._spawn_task(self._relaunch(slot, 0.0))

    async def _adopt(self, name: str) -> _Slot | None:
        """_adopt_once, once however many calls come at once."""
        task = self._adopting.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._adopt_once(name))
            self._adopting[name] = task
            task.add_done_callback(lambda _: self._adopting.pop(name, None))
        return await asyncio.shield(task)

    async def _adopt_once(self, name: str) -> _Slot | None:
        """The workers of a deployment this process never brought up, at its first call:
        one created through another control service sharing the database after this one
        started (resume brought up those that existed then). Each control service runs
        its own warm worker on this backend; the call waits for it to start, as the first
        call of a new variant does. None when there is no such deployment."""
        deployment_name, _ = split_key(name)
        async with self.transactions() as session:
            deployment = await self.deployments(session).by_name(deployment_name)
            wanted = (deployment is not None and deployment.mode == "low_latency"
                      and deployment.is_enabled)
        if not wanted:
            return None
        log.info("bringing up a warm worker for %s, created through another control "
                 "service", name)
        await self.ensure(name, wait_s=0)
        slot = self._slots.get(name)
        if slot is not None and not slot.expecting and slot.current is None \
                and not slot.failed:
            self._slots.pop(name, None)  # nothing to run it after all (see _load)
            return None
        return slot

    async def resume(self) -> None:
        self._start_background()
        async with self.transactions() as session:
            deployments = [(d.id, d.name) for d in
                           await self.deployments(session).low_latency() if d.is_enabled]
        for deployment_id, name in deployments:
            # known at once: executions triggered while the worker starts wait for it
            slot = self._slots.setdefault(name, _Slot(name))
            slot.deployment_id = deployment_id
            slot.resuming = True
            self._names[deployment_id] = name
            self._spawn_task(self._resume_one(slot))

    async def shutdown(self) -> None:
        self._closing = True
        for task in [*self._background, *self._tasks]:
            task.cancel()
        for slot in self._slots.values():
            slot.pulse()
        workers = [w for slot in self._slots.values()
                   for w in (slot.starting, slot.current, *slot.draining) if w is not None]
        await asyncio.gather(*(self._terminate(w) for w in workers), return_exceptions=True)
        await self._flush_logs()

    # -- dispatching --------------------------------------------------------------------------

    async def _serving(self, slot: _Slot | None) -> _Worker | None:
        """The worker to run on, waiting while one starts or restarts; None if there will
        be none."""
        while slot is not None:
            worker = slot.current
            if worker is not None and worker.status == "running" and not worker.retired:
                return worker
            if slot.failed or slot.stopped or self._closing or not slot.expecting:
                return None
            await slot.changed.wait()
        return None

    def _unavailable(self, slot: _Slot | None) -> str:
        if self._closing:
            return "the control service stopped before the execution could run"
        if slot is None or slot.stopped:
            return "the deployment's low-latency worker is not running"
        failed = slot.last_failed
        detail = f": {failed.exit_reason()}" if failed is not None else ""
        return f"the deployment's low-latency worker could not be started{detail}"

    async def _run_on(self, worker: _Worker, start: StartHook) -> WorkerAnswer | None:
        first_line = worker.lines  # what the worker prints from here may explain a crash
        body = await start(worker.pod_id)
        if body is None:
            return None
        try:
            status, content = await worker.client.request(
                "POST", "/executions", json.dumps(body).encode("utf-8"))
        except WorkerUnreachable as exc:
            raise ExecutionLost(await self._lost(worker, exc),
                                worker.output_since(first_line)[-TAIL_LINES:]) from exc
        report: Any = None
        if status == 200:
            with contextlib.suppress(ValueError):
                report = json.loads(content)
        if not isinstance(report, dict) or report.get("status") not in ("succeeded", "failed"):
            raise ExecutionLost("the low-latency worker gave no usable result "
                                f"(HTTP {status}): {content[:500].decode('utf-8', 'replace')}")
        slot = self._slots.get(worker.name)
        if slot is not None:
            slot.failures = 0  # it answered: whatever killed it before is not a crash loop
        return WorkerAnswer(pod_id=worker.pod_id, report=report)

    async def _lost(self, worker: _Worker, exc: Exception) -> str:
        """Why the connection to the worker broke mid-execution."""
        with contextlib.suppress(TimeoutError):
            await within(worker.exited.wait(), KILL_GRACE_S)
        if self._closing or worker.stopping:
            return "the low-latency worker was stopped while the execution ran"
        if worker.returncode is not None:
            return f"the low-latency worker crashed: {worker.exit_reason()}"
        return f"lost the connection to the low-latency worker: {type(exc).__name__}: {exc}"

    # -- starting and stopping workers ------------------------------------------------------

    async def _load(self, name: str) -> _Record | None:
        deployment_name, variant = split_key(replica_of(name)[0])
        node = node_step(replica_of(name)[0])
        async with self.transactions() as session:
            deployment = await self.deployments(session).by_name(deployment_name)
            if deployment is None or deployment.mode != "low_latency":
                return None
            if node is not None:  # a pool of a multi-step pipeline's nodes
                step = await StepRepository(session).by_name(node)
            else:
                pipeline_id = (deployment.pipeline_id if variant is None
                               else await self._pipeline_id(session, variant))
                if await self._is_graph(session, pipeline_id):
                    return None  # its nodes' pools serve it (executors/graph_workers.py)
                step = await StepRepository(session).get(
                    await self._step_id(session, pipeline_id))
            variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
            if step is None or not step.environment_key:
                python = Path("/nonexistent")
            else:
                python = python_of(self.builds.environment_dir(step.environment_key))
            return _Record(
                deployment_id=deployment.id, name=name,
                generation=deployment.generation, is_enabled=deployment.is_enabled,
                max_parallel=(deployment.max_parallel_executions_per_pod
                              if deployment.enable_parallel_executions else 1),
                step=step if step is not None else Step(name="", function_path="",
                                                        function_name=""),
                python=python, code=self.builds.code_dir(step.id) if step else Path(),
                variables=variables,
            )

    @staticmethod
    async def _pipeline_id(session: Any, pipeline_name: str) -> str:
        from sqlalchemy import select

        from gristmill_platform.db.models.steps import Pipeline

        found = await session.scalar(select(Pipeline.id).where(Pipeline.name == pipeline_name))
        return str(found) if found is not None else ""

    @staticmethod
    async def _is_graph(session: Any, pipeline_id: str) -> bool:
        from gristmill_platform.db.models.steps import Pipeline

        pipeline = await session.get(Pipeline, pipeline_id)
        return pipeline is not None and pipeline.graph is not None

    @staticmethod
    async def _step_id(session: Any, pipeline_id: str) -> str:
        from gristmill_platform.db.models.steps import Pipeline

        pipeline = await session.get(Pipeline, pipeline_id)
        return str(pipeline.step_id) if pipeline is not None else ""

    async def _launch(self, slot: _Slot, record: _Record, *, after_crash: bool
                      ) -> asyncio.Task[None]:
        """Start a worker for record and bring it up in the background (slot lock held)."""
        if slot.starting is not None:  # superseded by this newer start
            self._spawn_task(self._terminate(slot.starting))
            slot.starting = None
        if slot.bring_up is not None:
            slot.bring_up.cancel()
        slot.failed = False  # a new attempt: executions wait for its outcome
        slot.failure = None
        slot.launched = (record.deployment_id, record.generation)
        task = asyncio.get_running_loop().create_task(self._bring_up(slot, record, after_crash))
        slot.bring_up = task
        return task

    async def _bring_up(self, slot: _Slot, record: _Record, after_crash: bool) -> None:
        try:
            worker, reason = await self._start_worker(slot, record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a deployment creation_pending forever
            log.exception("starting the worker of %s failed", record.name)
            worker, reason = None, f"{type(exc).__name__}: {exc}"
        if asyncio.current_task() is not slot.bring_up or slot.stopped or self._closing:
            if worker is not None:
                await self._terminate(worker)
            return
        slot.bring_up = None
        slot.starting = None
        if reason is None and worker is not None:
            old = slot.current
            slot.current = worker
            worker.status = "running"
            worker.ready_at = worker.lines
            slot.failed = False
            slot.last_failed = None
            slot.pulse()
            if old is not None:
                self._spawn_task(self._drain(slot, old))
            self._log(worker, "Step module imported successfully; the worker is ready")
            await self._set_status(record, "up", None)
            return
        slot.restarting = after_crash  # set before any wait: executions keep waiting
        if worker is not None:
            slot.last_failed = worker
            await self._terminate(worker, status="failed")
        reason = reason or "the worker could not be started"
        if after_crash:
            await self._restart(slot, reason)
            return
        await self._give_up(slot, record, reason)

    async def _start_worker(self, slot: _Slot, record: _Record
                            ) -> tuple[_Worker | None, str | None]:
        """A started worker and None, or the worker (or None) and why it did not start."""
        if not record.python.exists():
            return None, "the step's environment is missing; create the step again"
        worker = await self._spawn(slot, record)
        slot.starting = worker
        slot.pulse()
        return worker, await self._wait_ready(worker)

    async def _spawn(self, slot: _Slot, record: _Record) -> _Worker:
        pod_id = self._pod_ids.next(record.name, record.generation)
        secret = secrets.token_urlsafe(32)
        io_root = await asyncio.to_thread(own_folder, self.data_dir / "low-latency" / pod_id)
        socket_path = await asyncio.to_thread(_socket_path)
        env = self._environment(record, socket_path, secret, io_root)
        process = await asyncio.create_subprocess_exec(
            str(record.python), "-m", "gristmill.runtime", "serve",
            env=env, cwd=str(record.code),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # stop() takes the processes the step started too
        )
        worker = _Worker(record, pod_id, socket_path, secret, process, io_root)
        priority = ""
        if slot.background:
            # before the step module's import, so that what it starts inherits it too
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, BACKGROUND_NICE)
                priority = f", at CPU priority nice {BACKGROUND_NICE} (shadow copies only)"
            except OSError as exc:  # not fatal: the copies just compete as equals
                log.warning("could not lower the CPU priority of worker %s: %s", pod_id, exc)
        self._log(worker, f"Pod {pod_id} created (pid {process.pid}{priority}); importing "
                  f"{record.step.function_path}")
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_output(worker))
        worker.tasks = [reader, loop.create_task(self._watch(slot, worker, reader))]
        return worker

    def _environment(self, record: _Record, socket_path: Path, secret: str, io_root: Path
                     ) -> dict[str, str]:
        """The elastic worker's environment (ExecutionRuntime._spec) without the
        per-execution entries, which come with each execution, plus the server's own."""
        url = self.environment_url
        return {
            **{k: v for k, v in os.environ.items() if k in PASSED_ENV},
            **record.variables,
            "GRISTMILL_ENVIRONMENT_URL": url,
            "CRAFT_AI_ENVIRONMENT_URL": url,
            "CRAFT_AI_CONTROL_URL": url,
            "GRISTMILL_STEP_DIR": str(record.code),
            "GRISTMILL_IO_DIR": str(io_root),
            "SDK_VERBOSE_LOG": "false",
            "PYTHONUNBUFFERED": "1",
            "GRISTMILL_WORKER_SOCKET": str(socket_path),
            "GRISTMILL_WORKER_SECRET": secret,
            "GRISTMILL_MAX_PARALLEL_EXECUTIONS": str(record.max_parallel),
            "GRISTMILL_FUNCTION_PATH": record.step.function_path,
            "GRISTMILL_FUNCTION_NAME": record.step.function_name,
            "GRISTMILL_WORKER_ENV_NAMES": json.dumps(sorted(record.variables)),
            "GRISTMILL_WORKER_PARENT_PID": str(os.getpid()),
        }

    async def _wait_ready(self, worker: _Worker) -> str | None:
        """None once /healthz answers 200; otherwise why the worker will not be ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        delay = HEALTH_POLL_FIRST_S
        while True:
            if worker.exited.is_set():
                last = worker.last_line()
                if worker.returncode == 1 and last:
                    return last  # the import traceback's last line
                return worker.exit_reason()
            with contextlib.suppress(WorkerUnreachable, TimeoutError):
                status, _ = await within(worker.client.request("GET", "/healthz"),
                                                   5.0)
                if status == 200:
                    return None
            if loop.time() > deadline:
                return f"the step module was still importing after {START_TIMEOUT_S:.0f} s"
            with contextlib.suppress(TimeoutError):
                await within(worker.exited.wait(), delay)
            delay = min(delay * 2, HEALTH_POLL_MAX_S)

    async def _read_output(self, worker: _Worker) -> None:
        """Lines the worker prints outside executions: the deployment's logs. Read in
        chunks, not lines: a step may print a line longer than any line limit."""
        stream = worker.process.stdout
        assert stream is not None
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._output_line(worker, raw)
            while len(pending) > MAX_LOG_LINE:
                self._output_line(worker, pending[:MAX_LOG_LINE])
                pending = pending[MAX_LOG_LINE:]
        if pending:
            self._output_line(worker, pending)

    def _output_line(self, worker: _Worker, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        worker.tail.append((worker.lines, line))
        worker.lines += 1
        self._log(worker, line)

    async def _watch(self, slot: _Slot, worker: _Worker, reader: asyncio.Task[None]) -> None:
        worker.returncode = await worker.process.wait()
        # What it printed last (the crash dump, the traceback) before its exit is known;
        # bounded, because a process the step started may hold the pipe open. asyncio.wait
        # leaves the reader running past the bound, whatever ends it is not raised here,
        # and this watch's own cancellation (the pool stopping) is passed on, not taken
        # for the reader's.
        await asyncio.wait({reader}, timeout=0.5)
        worker.exited.set()
        if worker.stopping or self._closing or worker.status != "running":
            return  # stopped on purpose, or still starting (the bring-up reports it)
        worker.status = "failed"
        worker.retired = True
        reason = worker.exit_reason()
        self._log(worker, f"The worker crashed: {reason}")
        if slot.current is worker and not slot.stopped:
            slot.current = None
            slot.last_failed = worker
            slot.restarting = True  # before waking the dispatches: they wait for it
            slot.pulse()
            try:
                await self._restart(slot, f"the worker crashed: {reason}")
            except Exception:
                log.exception("could not restart the worker of %s", slot.name)
                slot.restarting = False
                slot.pulse()
        await self._terminate(worker, status="failed")

    async def _restart(self, slot: _Slot, reason: str) -> None:
        """After a crash or a failed restart: down_retrying and a new worker, or
        creation_failed once it keeps failing."""
        slot.restarting = True
        if slot.stopped or self._closing:
            return
        slot.failures += 1
        record = await self._load(slot.name)
        if record is None:
            slot.restarting = False
            slot.pulse()
            return
        if slot.failures > MAX_RESTARTS_IN_A_ROW:
            await self._give_up(slot, record, f"the worker keeps failing: {reason}")
            return
        await self._set_status(record, "down_retrying", reason)
        self._spawn_task(self._relaunch(slot, _backoff(slot.failures)))

    async def _relaunch(self, slot: _Slot, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            async with slot.lock:
                # a worker came meanwhile (update_deployment rolled one in): nothing to do
                if (slot.stopped or self._closing or slot.current is not None
                        or slot.bring_up is not None):
                    return
                record = await self._load(slot.name)  # now: it may have been updated
                if record is None:
                    return
                WORKER_RESTARTS.labels(slot.name).inc()
                await self._launch(slot, record, after_crash=True)
        finally:
            slot.restarting = False
            slot.pulse()

    async def _give_up(self, slot: _Slot, record: _Record, reason: str) -> None:
        slot.failed = True
        slot.failure = reason
        slot.restarting = False
        old, slot.current = slot.current, None
        slot.pulse()
        if old is not None:
            # a roll that failed: what the old worker runs still ends normally
            self._spawn_task(self._drain(slot, old))
        await self._set_status(record, "creation_failed", reason)

    async def _drain(self, slot: _Slot, worker: _Worker) -> None:
        """A replaced worker finishes what it runs, then stops."""
        worker.retired = True
        slot.draining.add(worker)
        try:
            with contextlib.suppress(TimeoutError):
                await within(worker.idle.wait(), DRAIN_TIMEOUT_S)
            await self._terminate(worker)
        finally:
            slot.draining.discard(worker)

    async def _terminate(self, worker: _Worker, *, status: str = "stopped") -> None:
        worker.retired = True
        worker.stopping = worker.stopping or status == "stopped"
        if worker.status != "failed":
            worker.status = status
        process = worker.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await within(worker.exited.wait(), KILL_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await within(worker.exited.wait(), KILL_GRACE_S)
        else:
            # the worker is gone; what it started may not be
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        worker.client.close()
        with contextlib.suppress(FileNotFoundError):
            worker.socket_path.unlink()
        await asyncio.to_thread(remove_own_folder, worker.io_root.parent)

    async def _resume_one(self, slot: _Slot) -> None:
        try:
            async with self.transactions() as session:
                deployment = await self.deployments(session).by_name(slot.name)
                step_id = (await self._step_id(session, deployment.pipeline_id)
                           if deployment else "")
            if step_id:
                # a step whose build a restart interrupted is being built again
                await self.builds.wait(step_id, START_TIMEOUT_S)
            await self.ensure(slot.name, wait_s=0)
        finally:
            slot.resuming = False
            slot.pulse()

    # -- records ------------------------------------------------------------------------------

    async def _set_status(self, record: _Record, status: str, reason: str | None) -> None:
        """On the deployment, unless it was deleted or updated (a newer worker reports).
        A variant's workers say nothing of the deployment's status, nor its warm workers
        after the first."""
        if split_key(record.name)[1] is not None or replica_of(record.name)[1] != 0:
            return
        await self._flush_logs()  # the import-time output is in before the status says up
        await record_status(self.transactions, self.deployments, record.deployment_id,
                            record.generation, status, reason)

    def _log(self, worker: _Worker, message: str) -> None:
        self._logs.add(worker.deployment_id, datetime.now(UTC), worker.pod_id,
                       message[:MAX_LOG_LINE])

    async def _flush_logs(self) -> None:
        await self._logs.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            await self._flush_logs()

    def _start_background(self) -> None:
        if self._background or self._closing:
            return
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._flush_forever())]

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
