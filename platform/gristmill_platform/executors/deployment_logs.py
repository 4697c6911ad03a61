"""What a warm-worker pool knows of deployments, as narrow interfaces the composition
root fills in (deployments/worker_records.py): the backends never import the deployments'
storage.

The deployment logs a pool collects (import-time output, the worker's life) are kept in
memory and written in one transaction per flush: lines come in bursts and one by one, and
a deployment deleted meanwhile takes its lines with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.deployments import Deployment, DeploymentLog
from gristmill_platform.db.transactions import Transactions

log = logging.getLogger("gristmill.workers")


class DeploymentRecords(Protocol):
    """The deployment rows a pool reads and updates, in the caller's transaction."""

    async def low_latency(self) -> Sequence[Deployment]: ...

    async def by_name(self, name: str) -> Deployment | None: ...

    async def get(self, deployment_id: str) -> Deployment | None: ...

    async def generations(self, ids: Collection[str]) -> dict[str, int]: ...


# The records of one transaction's session.
DeploymentRecordsFor = Callable[[AsyncSession], DeploymentRecords]


async def record_status(transactions: Transactions, deployments: DeploymentRecordsFor,
                        deployment_id: str, generation: int, status: str,
                        reason: str | None) -> None:
    """Set a deployment's status, unless it was deleted or updated since (the newer
    generation's workers record their own outcome)."""
    try:
        async with transactions() as session:
            deployment = await deployments(session).get(deployment_id)
            if deployment is None or deployment.generation != generation:
                return
            deployment.status = status
            deployment.status_reason = reason
    except Exception:
        log.exception("could not record the status of deployment %s", deployment_id)


class DeploymentLogSink(Protocol):
    async def write(self, lines: Mapping[str, Sequence[DeploymentLog]]) -> None:
        """Store each deployment's lines (by deployment id) in one transaction, dropping
        those of deployments deleted meanwhile."""


class DeploymentLogBuffer:
    def __init__(self, sink: DeploymentLogSink) -> None:
        self.sink = sink
        self._lines: list[tuple[str, datetime, str, str]] = []
        self._lock = asyncio.Lock()

    def add(self, deployment_id: str, when: datetime, pod_id: str, message: str) -> None:
        self._lines.append((deployment_id, when, pod_id, message))

    async def flush(self) -> None:
        async with self._lock:
            lines, self._lines = self._lines, []
            if not lines:
                return
            by_deployment: dict[str, list[DeploymentLog]] = {}
            for deployment_id, when, pod_id, message in lines:
                by_deployment.setdefault(deployment_id, []).append(DeploymentLog(
                    deployment_id=deployment_id, timestamp=when, pod_id=pod_id,
                    type="deployment", message=message))
            try:
                await self.sink.write(by_deployment)
            except Exception:
                log.exception("could not record deployment logs")
