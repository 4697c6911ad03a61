from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.deployments import Deployment, DeploymentLog
from gristmill_platform.db.models.executions import Execution, top_level


class DeploymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_name(self, name: str) -> Deployment | None:
        result = await self.session.execute(select(Deployment).where(Deployment.name == name))
        return result.scalar_one_or_none()

    async def by_endpoint_path(self, path: str) -> Deployment | None:
        """The endpoint answering at /endpoints/<path>: its chosen path, or its name when it
        has none (deployments created before paths could be chosen)."""
        result = await self.session.execute(select(Deployment).where(
            Deployment.execution_rule == "endpoint",
            or_(Deployment.endpoint_url_path == path,
                and_(Deployment.endpoint_url_path.is_(None), Deployment.name == path))))
        return result.scalars().first()

    async def get(self, deployment_id: str) -> Deployment | None:
        return await self.session.get(Deployment, deployment_id)

    async def all(self) -> Sequence[Deployment]:
        result = await self.session.execute(select(Deployment).order_by(Deployment.created_at))
        return result.scalars().all()

    async def for_pipeline(self, pipeline_id: str) -> Sequence[Deployment]:
        result = await self.session.execute(
            select(Deployment).where(Deployment.pipeline_id == pipeline_id))
        return result.scalars().all()

    async def low_latency(self) -> Sequence[Deployment]:
        result = await self.session.execute(
            select(Deployment).where(Deployment.mode == "low_latency"))
        return result.scalars().all()

    async def generations(self, ids: Collection[str]) -> dict[str, int]:
        """The generation of each of these deployments that still exists, by id: one
        query, however many (executors/following.py)."""
        result = await self.session.execute(
            select(Deployment.id, Deployment.generation).where(Deployment.id.in_(ids)))
        return {str(row.id): int(row.generation) for row in result}

    async def any_due(self, now: datetime) -> bool:
        """Whether a periodic deployment's next fire time has come (no lock taken)."""
        return await self.session.scalar(select(Deployment.id).where(*_due(now)).limit(1)) \
            is not None

    async def due(self, now: datetime, *, limit: int = 20) -> Sequence[Deployment]:
        """Periodic deployments whose next fire time has come, locked for this
        transaction. SKIP LOCKED lets several control services share the work without
        firing one schedule twice; SQLite serialises writers instead."""
        query = (
            select(Deployment)
            .where(*_due(now))
            .order_by(Deployment.next_fire_at)
            .limit(limit)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        result = await self.session.execute(query)
        return result.scalars().all()

    async def latest_execution(self, deployment_id: str) -> Execution | None:
        result = await self.session.execute(
            select(Execution).where(Execution.deployment_id == deployment_id,
                                    top_level())
            .order_by(Execution.created_at.desc()).limit(1))
        return result.scalar_one_or_none()

    async def executions(self, deployment_id: str) -> Sequence[Execution]:
        result = await self.session.execute(
            select(Execution).where(Execution.deployment_id == deployment_id))
        return result.scalars().all()

    async def add(self, deployment: Deployment) -> None:
        self.session.add(deployment)
        await self.session.flush()

    async def delete(self, deployment: Deployment) -> None:
        await self.session.execute(
            delete(DeploymentLog).where(DeploymentLog.deployment_id == deployment.id))
        await self.session.delete(deployment)
        await self.session.flush()

    async def add_logs(self, rows: Sequence[DeploymentLog]) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def logs(self, deployment_id: str, *, start: datetime | None, end: datetime | None,
                   limit: int | None) -> Sequence[DeploymentLog]:
        query = select(DeploymentLog).where(DeploymentLog.deployment_id == deployment_id)
        if start is not None:
            query = query.where(DeploymentLog.timestamp >= start)
        if end is not None:
            query = query.where(DeploymentLog.timestamp <= end)
        query = query.order_by(DeploymentLog.timestamp, DeploymentLog.id)
        if limit is not None:
            query = query.limit(limit)
        result = await self.session.execute(query)
        return result.scalars().all()


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Deployment.execution_rule == "periodic", Deployment.is_enabled.is_(True),
            Deployment.next_fire_at.is_not(None), Deployment.next_fire_at <= now)
