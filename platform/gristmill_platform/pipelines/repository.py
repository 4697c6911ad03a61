from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.executions import Execution, top_level
from gristmill_platform.db.models.steps import Pipeline, Step

# built once: each run's request reads it (see executions/repository.py)
_WITH_STEP = (select(Pipeline, Step).join(Step, Step.id == Pipeline.step_id)
              .where(Pipeline.name == bindparam("name")))


class PipelineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_name(self, name: str) -> Pipeline | None:
        result = await self.session.execute(select(Pipeline).where(Pipeline.name == name))
        return result.scalar_one_or_none()

    async def get(self, pipeline_id: str) -> Pipeline | None:
        return await self.session.get(Pipeline, pipeline_id)

    async def with_step(self, name: str) -> tuple[Pipeline, Step] | None:
        result = await self.session.execute(_WITH_STEP, {"name": name})
        row = result.first()
        return (row[0], row[1]) if row else None

    async def list_with_steps(self) -> Sequence[tuple[Pipeline, Step]]:
        result = await self.session.execute(
            select(Pipeline, Step).join(Step, Step.id == Pipeline.step_id)
            .order_by(Pipeline.created_at))
        return [(p, s) for p, s in result.all()]

    async def latest_execution(self, pipeline_id: str) -> Execution | None:
        result = await self.session.execute(
            select(Execution).where(Execution.pipeline_id == pipeline_id,
                                    top_level())
            .order_by(Execution.created_at.desc()).limit(1))
        return result.scalar_one_or_none()

    async def add(self, pipeline: Pipeline) -> None:
        self.session.add(pipeline)
        await self.session.flush()

    async def delete(self, pipeline: Pipeline) -> None:
        await self.session.delete(pipeline)
        await self.session.flush()
