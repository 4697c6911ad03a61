"""Warm workers for low-latency deployments: the interface the control service uses.

A warm worker is the runner's server mode (`python -m gristmill.runtime serve`): it imports
the step module once and then runs executions on request (`POST /executions`, see
docs/internals/runtime-protocol.md). Locally it is a child process (local_workers.py); on
Kubernetes a Deployment and Service (kubernetes/workers.py).

A pool only brings workers up and down and carries executions to them. What an execution
records (start, end, logs, failure) is decided by its caller (executions/low_latency.py),
so both backends track executions the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gristmill_platform.db.types import utcnow

# Called once the execution holds a place on a serving worker, with that worker's pod id:
# returns the JSON body of the worker's POST /executions, or None when the execution must
# not run any more (deleted or ended meanwhile).
StartHook = Callable[[str], Awaitable[dict[str, Any] | None]]


# A pool's key: a deployment's name, or "<deployment>@<pipeline>" for the warm workers of
# a variant pipeline its traffic rule sends calls to (docs/rollout.md). Names never hold
# "@" (steps/names.py), so the two cannot be confused.
VARIANT_SEPARATOR = "@"


def variant_key(deployment_name: str, pipeline_name: str) -> str:
    return f"{deployment_name}{VARIANT_SEPARATOR}{pipeline_name}"


def split_key(key: str) -> tuple[str, str | None]:
    """(deployment name, variant pipeline name or None for its own pipeline)."""
    deployment, separator, pipeline = key.partition(VARIANT_SEPARATOR)
    return deployment, (pipeline if separator else None)


# A multi-step pipeline's deployment has one pool per distinct step its nodes run,
# "<deployment>@#<step>": a key of the deployment's other workers, as a variant's ("#"
# is in no name either), so that stopping the deployment stops them and they report
# nothing on the deployment's status themselves (executors/graph_workers.py does).
NODE_MARK = "#"


def node_key(deployment_name: str, step_name: str) -> str:
    return variant_key(deployment_name, f"{NODE_MARK}{step_name}")


def node_step(key: str) -> str | None:
    """The step name of a node pool's key, None for any other key."""
    _, variant = split_key(key)
    return variant[len(NODE_MARK):] if variant and variant.startswith(NODE_MARK) else None


# A deployment (or variant, or node) key served by several local warm workers has one
# pool slot per worker: the key itself for the first, "<key>~<n>" for the n-th (n >= 1).
# "~" is in no name either.
REPLICA_MARK = "~"


def replica_key(key: str, number: int) -> str:
    return key if number == 0 else f"{key}{REPLICA_MARK}{number}"


def replica_of(key: str) -> tuple[str, int]:
    """(the key all replicas share, this replica's number)."""
    base, separator, number = key.rpartition(REPLICA_MARK)
    return (base, int(number)) if separator and number.isdigit() else (key, 0)


# What a deployment's warm workers were started from: (its id, its generation). A
# deployment deleted and created again under its name has another id; update_deployment
# bumps the generation.
Version = tuple[str, int]


def behind(versions: set[Version], deployment_id: str, generation: int) -> bool:
    """Whether any of these workers runs something older than that deployment version:
    another deployment of the name, or an older generation of it."""
    return any(held_id != deployment_id or held < generation for held_id, held in versions)


class ExecutionLost(Exception):
    """The execution could not run or its worker did not answer: no worker will serve the
    deployment, the worker crashed or was stopped mid-execution, or it answered garbage.
    ``reason`` is for users; ``tail`` is what the worker printed that may explain it."""

    def __init__(self, reason: str, tail: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = list(tail)


@dataclass(frozen=True)
class WorkerAnswer:
    """A worker's report on one execution: {"status": "succeeded"|"failed", "outputs",
    "error", "logs"} (contract in docs/internals/runtime-protocol.md)."""

    pod_id: str
    report: dict[str, Any] = field(default_factory=dict)
    # when the answer came: the execution's end, whatever its recording waits for
    answered_at: datetime = field(default_factory=utcnow)


class WorkerPool(Protocol):
    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False, background: bool = False) -> None:
        """Start (or, with restart, roll) the deployment's worker from its current record,
        waiting up to wait_s for it to be ready. Records the outcome on the deployment:
        status "up", or "creation_failed" with status_reason, and its import-time output
        in the deployment logs. Idempotent. background: the workers it starts (now and
        after a crash) run at a low priority (shadow copies' workers, docs/rollout.md:
        nice 19 locally, a lower PriorityClass and CPU request on Kubernetes); until the
        next start with it False."""

    async def stop(self, deployment_name: str) -> None:
        """Stop the deployment's worker (deployment deleted)."""

    def deployment_names(self) -> list[str]:
        """The deployments this pool keeps workers for (the metrics' warm workers)."""

    def versions(self, deployment_name: str) -> set[Version]:
        """What the workers this process holds under the key run, or are being rolled or
        restarted to (a roll under way shows both versions): in memory, for a call to
        check against the deployment it read (LowLatencyDispatcher.follow) and for the
        periodic check against the database (following.py). Empty when it holds none,
        and on Kubernetes, whose workers are shared Deployments that an update or a
        deletion made through any control service rolls or removes."""

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        """[{"pod_id": ..., "status": "starting|running|failed|stopped"}] for get_deployment."""

    def verdict(self, key: str) -> tuple[str, str | None]:
        """("up" | "starting" | "failed", why it failed) of the workers under key, as this
        pool last saw them: how a multi-step pipeline's deployment judges the pools of its
        nodes (graph_workers.py), whose outcome no pool records on the deployment."""

    async def run(self, deployment_name: str, start: StartHook) -> WorkerAnswer | None:
        """Run one execution on the deployment's worker: wait for a serving worker (held
        while one starts or restarts) and a free place (at most the deployment's
        parallelism at once, the others wait in line), call start(pod_id) for the request
        body, send it, and return the worker's answer. None when start returned None.
        Raises ExecutionLost when no worker will serve the deployment, or the worker
        crashed, was stopped, became unreachable or answered garbage mid-execution."""

    def replace(self, deployment_name: str, pod_id: str, reason: str) -> None:
        """Give up that worker because an execution it runs was abandoned (it ran past the
        deployment's execution_timeout_s, executions/low_latency.py): Python cannot stop a
        function mid-call, and the call would hold its place forever. At once the worker
        takes no new executions (they wait for the new one); a new worker starts in the
        background; the old one stops once the other executions it runs have answered.
        ``reason`` goes to the deployment logs. Nothing happens if that worker was already
        replaced (a crash, a roll, another timed-out execution)."""

    async def resume(self) -> None:
        """At start-up: bring up the workers of every enabled low-latency deployment."""

    async def shutdown(self) -> None: ...
