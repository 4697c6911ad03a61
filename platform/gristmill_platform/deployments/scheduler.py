"""Fires periodic deployments. Runs in every control service process; the next fire time
lives in the database and due rows are claimed with SKIP LOCKED, so replicas sharing one
PostgreSQL database never fire a schedule twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.factory import DeploymentServices
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.schedule import next_fire
from gristmill_platform.errors import AppError
from gristmill_platform.executions.service import Launch
from gristmill_platform.telemetry.metrics import SCHEDULER_FIRES, SCHEDULER_LAG

log = logging.getLogger("gristmill.scheduler")


class PeriodicScheduler:
    def __init__(self, transactions: Transactions, deployments: DeploymentServices,
                 launch: Callable[[Launch], None], *, tick_s: float) -> None:
        self.transactions = transactions
        self.deployments = deployments
        self.launch = launch
        self.tick_s = tick_s
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
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> int:
        """Fire what is due; returns how many executions were started."""
        # Most ticks find nothing due: they look with a plain read, because a transaction
        # first writes everything the execution journal holds (Transactions' barrier), on
        # the event loop, which every second delayed the warm calls in flight by
        # milliseconds. Something due is then claimed in a transaction, barrier and all.
        async with self.transactions.session_factory() as session:
            if not await DeploymentRepository(session).any_due(utcnow()):
                return 0
        launches: list[Launch] = []
        failures: list[tuple[str, str]] = []
        lags: list[tuple[str, float]] = []  # how late each fire is, once committed
        async with self.transactions() as session:
            service = self.deployments(session)
            now = utcnow()
            for deployment in await DeploymentRepository(session).due(now):
                due_at = deployment.next_fire_at
                try:
                    async with session.begin_nested():
                        launch = await service.fire(deployment, now)
                except AppError as exc:
                    failures.append((deployment.id, exc.message))
                    continue
                if launch is not None:
                    launches.append(launch)
                    lag = (now - due_at).total_seconds() if due_at is not None else 0.0
                    lags.append((deployment.name, max(lag, 0.0)))
        for name, lag in lags:
            SCHEDULER_LAG.labels(name).set(lag)
            SCHEDULER_FIRES.labels(name).inc()
        for launch in launches:
            self.launch(launch)
        for deployment_id, reason in failures:
            await self._skip(deployment_id, reason)
        return len(launches)

    async def _skip(self, deployment_id: str, reason: str) -> None:
        """A fire that cannot start (an input no longer valid, ...) is logged and skipped,
        never retried in a loop."""
        async with self.transactions() as session:
            service = self.deployments(session)
            deployment = await service.repository.get(deployment_id)
            if deployment is None or not deployment.schedule:
                return
            now = utcnow()
            deployment.last_fire_at = now
            deployment.next_fire_at = next_fire(deployment.schedule, now)
            await service.record_logs(deployment.id, [
                (now, "scheduler", f"Scheduled execution not started: {reason}")])
