"""Run the control service with uvicorn."""

from __future__ import annotations

import uvicorn

from gristmill_platform.app import create_app
from gristmill_platform.settings import Settings


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=True,
        # long-polls (run results, endpoint results) hold requests; keep-alive helps SDKs
        timeout_keep_alive=75,
        access_log=settings.log_level == "debug",
    )


def serve(settings: Settings) -> None:
    uvicorn.Server(uvicorn_config(settings)).run()
