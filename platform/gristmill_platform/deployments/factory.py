"""Builds a DeploymentService on a transaction's session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.service import DeploymentService
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.pipelines.factory import PipelineServices


class DeploymentServices:
    def __init__(self, pipelines: PipelineServices, executions: ExecutionServices, *,
                 secret_key: str, gpu_available: bool) -> None:
        self.pipelines = pipelines
        self.executions = executions
        self.secret_key = secret_key
        self.gpu_available = gpu_available

    def __call__(self, session: AsyncSession) -> DeploymentService:
        return DeploymentService(
            DeploymentRepository(session), self.pipelines(session), self.executions(session),
            secret_key=self.secret_key, gpu_available=self.gpu_available)
