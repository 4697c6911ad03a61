"""What a user owns (steps, pipelines, deployments, executions), and handing it to another
user, so that a user can be deleted without breaking what runs in their name: deployments
run their executions as their owner (executions/low_latency.py, deployments/service.py).
Their multipart uploads in progress go to the heir too, though they do not make a refusal:
they expire on their own (datastore/housekeeping.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.datastore import MultipartUpload
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Pipeline, Step

_OWNED = (Deployment, Pipeline, Step, Execution, MultipartUpload)


@dataclass(frozen=True)
class Owned:
    deployments: list[str]  # names: they are what the refusal lists
    pipelines: int
    steps: int
    executions: int

    @property
    def anything(self) -> bool:
        return bool(self.deployments or self.pipelines or self.steps or self.executions)


class OwnershipRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def owned_by(self, user_id: str) -> Owned:
        names = (await self.session.execute(
            select(Deployment.name).where(Deployment.created_by == user_id)
            .order_by(Deployment.name))).scalars().all()

        async def count(model: type[Pipeline | Step | Execution]) -> int:
            result = await self.session.execute(
                select(func.count()).select_from(model).where(model.created_by == user_id))
            return int(result.scalar_one())

        return Owned(deployments=list(names), pipelines=await count(Pipeline),
                     steps=await count(Step), executions=await count(Execution))

    async def transfer(self, from_user: str, to_user: str) -> None:
        for model in _OWNED:
            await self.session.execute(update(model).where(model.created_by == from_user)
                                       .values(created_by=to_user)
                                       .execution_options(synchronize_session=False))
