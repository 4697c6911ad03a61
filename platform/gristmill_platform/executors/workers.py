"""Warm workers for low-latency deployments: the interface the control service uses.

A warm worker is the runner's server mode (`python -m gristmill.runtime serve`): it imports
the step module once and then runs executions on request. Locally it is a child process
(see local_workers.py); on Kubernetes a Deployment and Service (see kubernetes/)."""

from __future__ import annotations

from typing import Any, Protocol

from gristmill_platform.executions.service import Launch


class WorkerPool(Protocol):
    async def ensure(self, deployment_name: str, *, wait_s: float,
                     restart: bool = False) -> None:
        """Start (or, with restart, roll) the deployment's worker from its current record,
        waiting up to wait_s for it to be ready. Records the outcome on the deployment:
        status "up", or "creation_failed" with status_reason, and its import-time output
        in the deployment logs. Idempotent."""

    async def stop(self, deployment_name: str) -> None:
        """Stop the deployment's worker (deployment deleted)."""

    def pods(self, deployment_name: str) -> list[dict[str, Any]]:
        """[{"pod_id": ..., "status": "starting|running|failed|stopped"}] for get_deployment."""

    async def dispatch(self, launch: Launch) -> None:
        """Run a committed execution of a low-latency deployment on its worker (queued
        beyond the deployment's parallelism), then record its end as the elastic path
        does (ExecutionService.finish / fail)."""

    async def resume(self) -> None:
        """At start-up: bring up the workers of every enabled low-latency deployment."""

    async def shutdown(self) -> None: ...
