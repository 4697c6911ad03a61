"""The deployment logs a warm-worker pool collects (import-time output, the worker's life),
kept in memory and written in one transaction per flush: lines come in bursts and one by
one, and a deployment deleted meanwhile takes its lines with it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from gristmill_platform.db.models.deployments import DeploymentLog
from gristmill_platform.deployments.repository import DeploymentRepository

if TYPE_CHECKING:
    from gristmill_platform.state import AppState

log = logging.getLogger("gristmill.workers")


class DeploymentLogBuffer:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._lines: list[tuple[str, datetime, str, str]] = []
        self._lock = asyncio.Lock()

    def add(self, deployment_id: str, when: datetime, pod_id: str, message: str) -> None:
        self._lines.append((deployment_id, when, pod_id, message))

    async def flush(self) -> None:
        from gristmill_platform.deps import transaction

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
                async with transaction(self.state) as session:
                    repository = DeploymentRepository(session)
                    for deployment_id, rows in by_deployment.items():
                        if await repository.get(deployment_id) is not None:  # not deleted
                            await repository.add_logs(rows)
            except Exception:
                log.exception("could not record deployment logs")
