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
    # each module's router keeps itself out of the OpenAPI document; `/` alone is in it
    router = APIRouter()
    router.include_router(home.root_router)
    for module in (assets, home, pipelines, deployments, executions, monitoring, datastore,
                   environment):
        router.include_router(module.router)
    return router
