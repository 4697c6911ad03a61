from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from gristmill_platform.auth import policy
from gristmill_platform.deps import PrincipalDep, SessionDep
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.env_vars.schemas import (
    EnvVarRead,
    EnvVarsUpsert,
    EnvVarsUpserted,
    EnvVarUpserted,
)
from gristmill_platform.env_vars.service import EnvVarService

router = APIRouter(prefix="/environment-variables", tags=["environment variables"])


async def env_var_service(session: SessionDep) -> EnvVarService:
    return EnvVarService(EnvVarRepository(session))


ServiceDep = Annotated[EnvVarService, Depends(env_var_service)]


@router.put("", response_model=EnvVarsUpserted)
async def upsert(
    body: EnvVarsUpsert, principal: PrincipalDep, service: ServiceDep
) -> EnvVarsUpserted:
    policy.require_create(principal, "Changing environment variables")
    results = await service.upsert_many(body.environment_variables)
    return EnvVarsUpserted(
        environment_variables=[
            EnvVarUpserted(id=r.name, name=r.name, created=r.created) for r in results
        ]
    )


@router.get("", response_model=list[EnvVarRead])
async def list_variables(principal: PrincipalDep, service: ServiceDep) -> list[EnvVarRead]:
    visible = policy.env_var_values_visible(principal)
    return [EnvVarRead(name=v.name, value=v.value if visible else None)
            for v in await service.list()]


@router.delete("/{name}", response_model=EnvVarRead)
async def delete(name: str, principal: PrincipalDep, service: ServiceDep) -> EnvVarRead:
    policy.require_create(principal, "Deleting environment variables")
    variable = await service.delete(name)
    return EnvVarRead(name=variable.name, value=variable.value)
