"""Setting a deployment's traffic rule and validations (docs/rollout.md): checked, stored,
and each change recorded (who, when, what)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.traffic import DeploymentTraffic, DeploymentTrafficChange
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.comparison import WINDOW, validation_counts
from gristmill_platform.deployments.comparison_repository import ComparisonRepository
from gristmill_platform.deployments.service import DeploymentService
from gristmill_platform.deployments.traffic import (
    InvalidTraffic,
    TrafficRule,
    io_mismatch,
    parse_rule,
)
from gristmill_platform.deployments.validations import parse_validations
from gristmill_platform.pipelines.service import PipelineNotFound

HISTORY_LIMIT = 50


class TrafficService:
    def __init__(self, session: AsyncSession, deployments: DeploymentService) -> None:
        self.session = session
        self.deployments = deployments

    async def row(self, deployment: Deployment) -> DeploymentTraffic | None:
        return await self.session.get(DeploymentTraffic, deployment.id)

    async def set_traffic(self, name: str, body: Mapping[str, Any], principal: Principal
                          ) -> tuple[Deployment, TrafficRule]:
        principal.require_user_scope("Changing a deployment's traffic")
        deployment = await self.deployments.get(name)
        policy.require_owner(principal, deployment.created_by, f"Deployment {name!r}")
        rule = parse_rule(body)
        if rule.kind is not None and deployment.execution_rule != "endpoint":
            raise InvalidTraffic(f"Deployment {name!r} is periodic: traffic rules apply to "
                                 "endpoints")
        if deployment.pipeline_name in rule.shadow:
            raise InvalidTraffic(f"Pipeline {deployment.pipeline_name!r} is the deployment's "
                                 "own: it cannot shadow itself")
        await self._check_variants(deployment, rule.pipelines())
        await self._store(deployment, principal, "traffic", rule.document())
        return deployment, rule

    async def set_validations(self, name: str, body: Mapping[str, Any], principal: Principal
                              ) -> tuple[Deployment, dict[str, str]]:
        principal.require_user_scope("Changing a deployment's validations")
        deployment = await self.deployments.get(name)
        policy.require_owner(principal, deployment.created_by, f"Deployment {name!r}")
        validations = parse_validations(body)
        await self._store(deployment, principal, "validations", validations)
        return deployment, validations

    async def changes(self, deployment: Deployment) -> Sequence[DeploymentTrafficChange]:
        rows = await self.session.scalars(
            select(DeploymentTrafficChange)
            .where(DeploymentTrafficChange.deployment_name == deployment.name)
            .order_by(DeploymentTrafficChange.changed_at.desc(),
                      DeploymentTrafficChange.id.desc())
            .limit(HISTORY_LIMIT))
        return rows.all()

    async def summary(self, deployment: Deployment) -> dict[str, Any]:
        """Its rule, validations, and how each pipeline did over the recent executions."""
        row = await self.row(deployment)
        variants = await ComparisonRepository(self.session).variants(deployment.name, WINDOW)
        return {"rule": row.rule if row is not None else {},
                "validations": row.validations if row is not None else {},
                "validation_counts": validation_counts(variants),
                "comparison": variants, "comparison_window": WINDOW}

    async def _check_variants(self, deployment: Deployment, names: set[str]) -> None:
        _, own = await self.deployments.pipelines.get(deployment.pipeline_name)
        for pipeline in sorted(names - {deployment.pipeline_name}):
            try:
                _, step = await self.deployments.pipelines.get(pipeline)
            except PipelineNotFound:
                raise InvalidTraffic(f"Pipeline {pipeline!r} not found") from None
            mismatch = io_mismatch(pipeline, own.inputs, own.outputs, step.inputs,
                                   step.outputs)
            if mismatch:
                raise InvalidTraffic(mismatch)

    async def _store(self, deployment: Deployment, principal: Principal, what: str,
                     value: dict[str, Any]) -> None:
        row = await self.row(deployment)
        if row is None:
            row = DeploymentTraffic(deployment_id=deployment.id, rule={}, validations={})
            self.session.add(row)
        if what == "traffic":
            row.rule = value
        else:
            row.validations = value
        row.updated_by, row.updated_at = principal.user_id, utcnow()
        self.session.add(DeploymentTrafficChange(
            deployment_id=deployment.id, deployment_name=deployment.name,
            changed_by=principal.user_id, changed_at=utcnow(), what=what, value=value))
