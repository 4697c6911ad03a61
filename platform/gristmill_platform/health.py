from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

import gristmill_platform
from gristmill_platform.deps import AppStateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: AppStateDep) -> dict[str, str]:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return {"status": "ready"}


@router.get("/")
async def root(state: AppStateDep) -> dict[str, str]:
    return {
        "name": "gristmill",
        "version": gristmill_platform.__version__,
        "environment_url": state.settings.environment_url,
        "api": f"{state.settings.environment_url}/api/v1",
        "docs": f"{state.settings.environment_url}/docs",
    }
