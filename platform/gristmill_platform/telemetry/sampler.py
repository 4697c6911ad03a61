"""Figures every replica shares, read from the database every few seconds by a background
task and served from memory at scrape time: the elastic queue, the executions running, the
most overdue periodic deployment. Each replica reports the same values (dashboards take
their max); a scrape never waits for the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.types import utcnow
from gristmill_platform.executions import transitions as t
from gristmill_platform.telemetry import live
from gristmill_platform.telemetry.live import LiveGauges, Reading

log = logging.getLogger("gristmill.telemetry")

LOW_LATENCY = "low_latency"
ELASTIC = "elastic"


def overdue_seconds(now: datetime, earliest_due: datetime | None) -> float:
    if earliest_due is None or earliest_due >= now:
        return 0.0
    return (now - earliest_due).total_seconds()


class DatabaseSampler:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], data_dir: Path,
                 *, interval_s: float = 15.0) -> None:
        self.session_factory = session_factory
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.queue_depth = 0.0
        self.running: dict[str, float] = {ELASTIC: 0.0, LOW_LATENCY: 0.0}
        self.earliest_due: datetime | None = None
        self.sampled_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self, gauges: LiveGauges) -> None:
        gauges.provide(live.ELASTIC_QUEUE_DEPTH, lambda: {(): self.queue_depth})
        gauges.provide(live.EXECUTIONS_RUNNING,
                       lambda: {(mode,): count for mode, count in self.running.items()})
        gauges.provide(live.SCHEDULER_OVERDUE, self._overdue)
        gauges.provide(live.DATA_DIR_FREE, lambda: self._disk()[0])
        gauges.provide(live.DATA_DIR_SIZE, lambda: self._disk()[1])

    def _overdue(self) -> Reading:
        # computed at scrape time from the earliest due time, so a stalled scheduler shows
        # a growing figure even between samples
        return {(): overdue_seconds(utcnow(), self.earliest_due)}

    def _disk(self) -> tuple[Reading, Reading]:
        usage = shutil.disk_usage(self.data_dir)
        return {(): float(usage.free)}, {(): float(usage.total)}

    async def sample(self) -> None:
        mode = func.coalesce(Deployment.mode, ELASTIC)
        async with self.session_factory() as session:
            pending = await session.scalar(
                select(func.count()).select_from(Execution)
                .outerjoin(Deployment, Deployment.id == Execution.deployment_id)
                .where(Execution.status == t.PENDING, mode != LOW_LATENCY))
            running = (await session.execute(
                select(mode, func.count()).select_from(Execution)
                .outerjoin(Deployment, Deployment.id == Execution.deployment_id)
                .where(Execution.status == t.RUNNING).group_by(mode))).all()
            earliest = await session.scalar(
                select(func.min(Deployment.next_fire_at))
                .where(Deployment.execution_rule == "periodic",
                       Deployment.is_enabled.is_(True)))
        self.queue_depth = float(pending or 0)
        self.running = {ELASTIC: 0.0, LOW_LATENCY: 0.0}
        for name, count in running:
            self.running[str(name)] = float(count)
        self.earliest_due = earliest
        self.sampled_at = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not sample the database for metrics", exc_info=True)
            await asyncio.sleep(self.interval_s)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
