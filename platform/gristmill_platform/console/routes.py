"""The console's routes, included once by create_app."""

from __future__ import annotations

from fastapi import APIRouter

from gristmill_platform.console import (
    assets,
    datastore,
    deployments,
    environment,
    executions,
    home,
    monitoring,
    pipelines,
)


def console_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    for module in (assets, home, pipelines, deployments, executions, monitoring, datastore,
                   environment):
        router.include_router(module.router)
    return router
