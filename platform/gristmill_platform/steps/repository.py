from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.steps import Pipeline, Step


class StepRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, step_id: str) -> Step | None:
        return await self.session.get(Step, step_id)

    async def by_ids(self, step_ids: Iterable[str | None]) -> dict[str, Step]:
        wanted = {i for i in step_ids if i}
        if not wanted:
            return {}
        result = await self.session.execute(select(Step).where(Step.id.in_(wanted)))
        return {step.id: step for step in result.scalars().all()}

    async def by_name(self, name: str) -> Step | None:
        result = await self.session.execute(select(Step).where(Step.name == name))
        return result.scalar_one_or_none()

    async def list_visible(self) -> Sequence[Step]:
        result = await self.session.execute(
            select(Step).where(Step.is_hidden.is_(False)).order_by(Step.created_at))
        return result.scalars().all()

    async def pending(self) -> Sequence[Step]:
        result = await self.session.execute(select(Step).where(Step.status == "creation_pending"))
        return result.scalars().all()

    async def pipelines_using(self, step_id: str) -> Sequence[Pipeline]:
        result = await self.session.execute(select(Pipeline).where(Pipeline.step_id == step_id))
        direct = list(result.scalars().all())
        # multi-step pipelines name their steps in their graph's nodes
        graphs = await self.session.execute(select(Pipeline).where(Pipeline.graph.is_not(None)))
        return direct + [p for p in graphs.scalars().all()
                         if p not in direct and p.graph is not None
                         and any(n["step_id"] == step_id for n in p.graph["nodes"])]

    async def add(self, step: Step) -> Step:
        self.session.add(step)
        await self.session.flush()
        return step

    async def delete(self, step: Step) -> None:
        await self.session.delete(step)
        await self.session.flush()

    async def environment_keys(self) -> set[str]:
        """The local environments some step still uses."""
        result = await self.session.execute(
            select(Step.environment_key).where(Step.environment_key.is_not(None)))
        return {key for key in result.scalars().all() if key}
