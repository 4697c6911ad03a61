"""Project settings and environment identity (craft-ai-sdk 0.74, docs/compatibility.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import gristmill_platform
from gristmill_platform.deps import AppStateDep, PrincipalDep
from gristmill_platform.project.service import environment_information, project_information

router = APIRouter(tags=["project"])


@router.get("/project-information")
async def get_project_information(state: AppStateDep, principal: PrincipalDep
                                  ) -> dict[str, Any]:
    return project_information(state.settings)


# unauthenticated: the 0.74 client asks it without a token, as a health check
@router.get("/environment-info")
async def get_environment_info(state: AppStateDep) -> dict[str, Any]:
    return environment_information(state.settings, gristmill_platform.__version__)
