"""Project settings and environment identity, and the answers for what a self-hosted
environment does not run (craft-ai-sdk 0.74, docs/compatibility.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import gristmill_platform
from gristmill_platform.deps import AppStateDep, PrincipalDep
from gristmill_platform.project.service import environment_information, project_information
from gristmill_platform.project.unsupported import (
    pipeline_templates_not_supported,
    vector_database_not_supported,
)

router = APIRouter(tags=["project"])


@router.get("/project-information")
async def get_project_information(state: AppStateDep, principal: PrincipalDep
                                  ) -> dict[str, Any]:
    return project_information(state.settings)


# unauthenticated: the 0.74 client asks it without a token, as a health check
@router.get("/environment-info")
async def get_environment_info(state: AppStateDep) -> dict[str, Any]:
    return environment_information(state.settings, gristmill_platform.__version__)


@router.get("/pipeline-templates")
async def list_pipeline_templates(principal: PrincipalDep) -> None:
    pipeline_templates_not_supported()


@router.get("/pipeline-templates/{name}")
async def get_pipeline_template(name: str, principal: PrincipalDep) -> None:
    pipeline_templates_not_supported()


@router.get("/environments/{environment_id}/vector-database")
async def vector_database_credentials(environment_id: str, principal: PrincipalDep) -> None:
    vector_database_not_supported()
