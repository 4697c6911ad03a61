"""Backend-neutral descriptions of what to run.

Both backends launch the same program (the SDK's runner, ``python -m gristmill.runtime``)
with the same environment; only where it runs differs. These types are plain data so the
Kubernetes manifests can be built from them by pure functions and golden-tested.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Resources:
    """What one worker asks for. ``None`` means "the backend's default"."""

    cpu: float | None = None
    memory_bytes: int | None = None
    gpu: int = 0
    # Scratch space for file inputs/outputs; bounds the worker's I/O volume when set.
    disk_bytes: int | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """One elastic execution: a fresh worker runs one execution, then exits."""

    execution_id: str
    step_name: str
    pipeline_name: str
    language: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    resources: Resources = field(default_factory=Resources)
    image: str | None = None  # ignored by the local backend
    deployment_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_s: int | None = None
    # The execution reads or writes files: the worker gets a writable I/O directory whose
    # path it finds in GRISTMILL_IO_DIR.
    file_io: bool = False


@dataclass(frozen=True)
class WorkerSpec:
    """A low-latency deployment's warm worker (the runner's server mode)."""

    deployment_name: str
    step_name: str
    pipeline_name: str
    language: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int
    replicas: int = 1
    max_parallel_executions: int = 1
    resources: Resources = field(default_factory=Resources)
    image: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    generation: int = 1  # bumped by update_deployment to roll the workers
    file_io: bool = False  # as LaunchSpec.file_io, shared by the executions the worker runs
    deployment_id: str = ""  # of the deployment the workers belong to (their objects' label)
    # started for shadow copies only (WorkerPool.ensure's background): a lower priority
    shadow_only: bool = False


class WorkerState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


class FailureCode(str, enum.Enum):
    """Why a worker did not succeed (or is stuck), in a form code can branch on.

    ``PollResult.reason`` is the sentence for users; this is for the control service
    (status reasons, retry decisions) and for tests, which should not match on prose.
    """

    IMAGE_PULL = "image_pull"  # the worker image cannot be pulled
    CONFIG = "config"  # the container cannot be created (missing secret, bad spec)
    UNSCHEDULABLE = "unschedulable"  # no node can take the worker (e.g. no GPU node)
    OOM_KILLED = "oom_killed"  # the worker went over its memory limit
    EVICTED = "evicted"  # the node or the cluster took the worker away
    EXIT_CODE = "exit_code"  # the runner exited with a non-zero code
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the execution ran past its timeout
    CANCELLED = "cancelled"  # stopped on request
    WORKER_LOST = "worker_lost"  # the worker (or its node) vanished
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PollResult:
    """What the backend knows about a submitted execution's worker."""

    state: WorkerState
    reason: str | None = None  # a sentence a user understands, for failures
    exit_code: int | None = None
    # Set for failures, and for pending workers that are stuck for a known reason.
    code: FailureCode | None = None


# A handle is structured, JSON-serialisable data stored on the execution row.
Handle = dict[str, Any]


# What a local worker inherits of the control service's own environment.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")
