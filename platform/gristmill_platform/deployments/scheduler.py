"""Fires periodic deployments. Runs in every control service process; the next fire time
lives in the database and due rows are claimed with SKIP LOCKED, so replicas sharing one
PostgreSQL database never fire a schedule twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.schedule import next_fire
from gristmill_platform.errors import AppError
from gristmill_platform.executions.service import Launch

if TYPE_CHECKING:
    from gristmill_platform.state import AppState

log = logging.getLogger("gristmill.scheduler")


class PeriodicScheduler:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.state.settings.scheduler_tick_s)

    async def tick(self) -> int:
        """Fire what is due; returns how many executions were started."""
        from gristmill_platform.deployments.routes import deployment_services
        from gristmill_platform.deps import transaction

        launches: list[Launch] = []
        failures: list[tuple[str, str]] = []
        async with transaction(self.state) as session:
            service = deployment_services(self.state, session)
            now = utcnow()
            for deployment in await DeploymentRepository(session).due(now):
                try:
                    async with session.begin_nested():
                        launch = await service.fire(deployment, now)
                except AppError as exc:
                    failures.append((deployment.id, exc.message))
                    continue
                if launch is not None:
                    launches.append(launch)
        for launch in launches:
            self.state.executions.launch(launch)
        for deployment_id, reason in failures:
            await self._skip(deployment_id, reason)
        return len(launches)

    async def _skip(self, deployment_id: str, reason: str) -> None:
        """A fire that cannot start (an input no longer valid, ...) is logged and skipped,
        never retried in a loop."""
        from gristmill_platform.deployments.routes import deployment_services
        from gristmill_platform.deps import transaction

        async with transaction(self.state) as session:
            service = deployment_services(self.state, session)
            deployment = await service.repository.get(deployment_id)
            if deployment is None or not deployment.schedule:
                return
            now = utcnow()
            deployment.last_fire_at = now
            deployment.next_fire_at = next_fire(deployment.schedule, now)
            await service.record_logs(deployment.id, [
                (now, "scheduler", f"Scheduled execution not started: {reason}")])
