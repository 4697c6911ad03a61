"""The shadow runner's own API listener (executions/shadow_process.py): the control
service's routes over the runner's services, on a loopback port its shadow workers are
given as their control service URL.

Why: a shadow step that calls the API with its execution token (the SDK inside the step:
metrics, data store, its execution, file outputs) must reach a process where that token
is known. The runner's journal writes a running copy and its token only after about a
second (as another replica's would), so the main control service would refuse such a
call at the start of the execution. Served here, the call's transaction first writes
what the runner's journal holds (the barrier, db/transactions.py), as a read through
the main service does for its own fast-path executions: no write per copy on the
copy's path.

Same application, same authentication: nothing is reachable here that the control
service does not serve to the same token. Bound to 127.0.0.1 on a port the kernel
chooses (the SDK speaks HTTP over TCP only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.shadow_runner")

HOST = "127.0.0.1"
# At shutdown, how long requests in flight get to end.
STOP_S = 5.0


class _Server(uvicorn.Server):
    """The runner handles its own signals (SIGTERM: write what it recorded, stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class LoopbackApi:
    """Bound at once (the URL is known before the worker pool is built), served from
    start() until stop()."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((HOST, 0))
        self.socket.listen(128)
        self.url = f"http://{HOST}:{self.socket.getsockname()[1]}"
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: FastAPI, log_level: str) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level=log_level,
                                access_log=False, timeout_keep_alive=75)
        server = _Server(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[self.socket]))
        while not server.started:
            if self._task.done():  # it could not start: say why
                self._task.result()
                raise RuntimeError("the shadow runner's API listener did not start")
            await asyncio.sleep(0.01)
        log.info("shadow runner API on %s (its shadow workers' control service)", self.url)

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            self.socket.close()
            return
        server.should_exit = True
        try:
            await within(asyncio.shield(task), STOP_S)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(BaseException):
                await task
        except Exception:
            log.exception("the shadow runner's API listener failed")
        finally:
            self.socket.close()
