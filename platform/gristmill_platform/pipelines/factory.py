"""Builds a PipelineService on a transaction's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.pipelines.repository import PipelineRepository
from gristmill_platform.pipelines.service import PipelineService
from gristmill_platform.steps.factory import StepServices


class PipelineServices:
    def __init__(self, steps: StepServices) -> None:
        self.steps = steps

    def __call__(self, session: AsyncSession) -> PipelineService:
        return PipelineService(PipelineRepository(session), self.steps(session))
