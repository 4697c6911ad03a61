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


class WorkerState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PollResult:
    """What the backend knows about a submitted execution's worker."""

    state: WorkerState
    reason: str | None = None  # a sentence a user understands, for failures
    exit_code: int | None = None


# A handle is structured, JSON-serialisable data stored on the execution row.
Handle = dict[str, Any]
