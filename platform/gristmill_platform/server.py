"""Run the control service with uvicorn."""

from __future__ import annotations

import uvicorn

from gristmill_platform.app import create_app
from gristmill_platform.http.coalescing import CoalescingHttpToolsProtocol
from gristmill_platform.logs import logging_config
from gristmill_platform.settings import Settings


def uvicorn_config(settings: Settings, *, freeze_heap: bool = False) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, freeze_heap=freeze_heap),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_format, settings.log_level),
        proxy_headers=True,
        # httptools (uvicorn[standard]), a response's head sent with its body in one write
        http=CoalescingHttpToolsProtocol,
        # long-polls (run results, endpoint results) hold requests; keep-alive helps SDKs
        timeout_keep_alive=75,
        access_log=settings.log_level == "debug",
    )


def serve(settings: Settings) -> None:
    uvicorn.Server(uvicorn_config(settings, freeze_heap=True)).run()
