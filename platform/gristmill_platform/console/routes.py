"""The console's routes, included by the app (app.py, flat)."""

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


def console_routers() -> list[APIRouter]:
    """The console's routers, in the order they are matched."""
    # each module's router keeps itself out of the OpenAPI document; `/` alone is in it
    return [home.root_router, *(module.router for module in (
        assets, home, pipelines, deployments, executions, monitoring, datastore,
        environment))]
