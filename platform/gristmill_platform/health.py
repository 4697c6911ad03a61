from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

import gristmill_platform
from gristmill_platform.deps import AppStateDep
from gristmill_platform.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: AppStateDep) -> dict[str, str]:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return {"status": "ready"}


def service_info(settings: Settings) -> dict[str, str]:
    """What ``GET /`` answers API clients (the console answers browsers, console/home.py)."""
    return {
        "name": "gristmill",
        "version": gristmill_platform.__version__,
        "environment_url": settings.environment_url,
        "api": f"{settings.environment_url}/api/v1",
        "docs": f"{settings.environment_url}/docs",
        "console": f"{settings.environment_url}/",
    }
