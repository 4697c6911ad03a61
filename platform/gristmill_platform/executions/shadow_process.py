"""The shadow runner process (executions/shadow_runner.py starts it): the application's
services, running the shadow copies a control service hands over. Its only listener is
the API on a loopback port that its own shadow workers use as their control service
(executions/shadow_api.py): a step's SDK calls land where its token is known at once.

``python -m gristmill_platform.executions.shadow_process <fd>``: fd is its end of the
socket pair, the pickled Settings come on standard input. It stops when the control
service closes its end (or dies: the same end of file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from gristmill_platform.deployments.directory import Endpoint, EndpointDirectory
from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.executions.low_latency import LowLatencyDispatcher
from gristmill_platform.settings import Settings
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.shadow_runner")

# Below the control service and its answering workers: on a busy machine they go first.
# Not 19: a runner starved by other work on the machine would drop copies (its shadow
# workers are at nice 19 all the same, local_workers.BACKGROUND_NICE).
RUNNER_NICE = 10
# What became of the copies is told back at most this often (one frame for all), and at
# once when every copy handed over has run (the control service then sends the next ones,
# shadow_release.py).
ACCOUNT_S = 0.05
# How often the runner stops the workers of pipelines no longer a shadow of their
# deployment (a rule changed or removed, the deployment deleted): the control service's
# own variant workers are its own, stopped by it.
SWEEP_S = 2.0
# When the control service closes its end (it stops), the copies the runner holds still
# run for at most this long before it stops (its own stop then fits in the service's
# shadow_runner.STOP_GRACE_S); those left are counted as lost there.
DRAIN_S = 5.0


class CopyRunner:
    """Takes the copies a control service hands over and runs them with the dispatcher's
    own shadow machinery (LowLatencyDispatcher.shadow); tells back what became of them."""

    def __init__(self, endpoints: EndpointDirectory, dispatcher: LowLatencyDispatcher,
                 wait_s: float, writer: asyncio.StreamWriter) -> None:
        self.endpoints = endpoints
        self.dispatcher = dispatcher
        self.wait_s = wait_s
        self.writer = writer
        self._done: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._keys: dict[str, tuple[str, str]] = {}  # worker key -> (path, pipeline)
        self._open = 0  # copies taken and not accounted for yet
        self._none_open = asyncio.Event()
        self._none_open.set()
        dispatcher.on_settled = self._settled

    async def serve(self, reader: asyncio.StreamReader) -> None:
        sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        try:
            while True:
                try:
                    header = await reader.readexactly(frames.HEADER.size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the control service closed its end, or died
                payload = await reader.readexactly(frames.length(header))
                await self.take(payload)
        finally:
            sweeper.cancel()
            self.account()

    async def drain(self, wait_s: float) -> None:
        """Until every copy taken has run (or wait_s): those handed over in the last
        batch before the control service stopped are run, not lost."""
        with contextlib.suppress(TimeoutError):
            await within(self._none_open.wait(), wait_s)

    async def take(self, payload: bytes) -> None:
        self._open += 1  # accounted for below, or by the dispatcher (_settled)
        self._none_open.clear()
        try:
            found = frames.document(payload)
        except frames.BadFrame as exc:
            log.warning("a shadow copy that is not one was handed over: %s", exc)
            self._closed()
            return
        try:
            copy = frames.read_copy(found)
        except frames.BadFrame as exc:
            log.warning("a shadow copy that is not one was handed over: %s", exc)
            path = found.get("e")
            if isinstance(path, str):  # accounted for: the control service counts it
                self._count(self._dropped, path)
            else:
                self._closed()
            return
        try:
            await self._run(copy)
        except Exception:
            log.exception("the shadow copy for %s of a call to %s was not run",
                          copy.pipeline, copy.path)
            self._count(self._done, copy.path)

    async def _run(self, copy: frames.Copy) -> None:
        endpoint = await self.endpoints.lookup(copy.path)
        variant = endpoint.variant(copy.pipeline) if endpoint is not None else None
        if variant is None:  # a rule set through the control service a moment ago
            endpoint = await self.endpoints.reload(copy.path)
            variant = endpoint.variant(copy.pipeline) if endpoint is not None else None
        if variant is None:
            log.warning("no shadow copy for %s of a call to %s: it is no longer there",
                        copy.pipeline, copy.path)
            self._count(self._done, copy.path)
            return
        self._keys[variant.worker_key] = (copy.path, copy.pipeline)
        environment = await self.dispatcher.environment.current()
        self.dispatcher.shadow(variant, copy.body, environment, wait_s=self.wait_s)

    def _settled(self, endpoint: Endpoint, dropped: bool) -> None:
        self._count(self._dropped if dropped else self._done, endpoint.path)

    def _count(self, counts: dict[str, int], path: str) -> None:
        counts[path] = counts.get(path, 0) + 1
        self._closed()
        if not self._open:  # the chunk handed over has run: the service sends the next
            self.account()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(ACCOUNT_S, self.account)

    def _closed(self) -> None:
        """A copy taken is accounted for (or was not one)."""
        self._open = max(0, self._open - 1)
        if not self._open:
            self._none_open.set()

    def account(self) -> None:
        """Tell the control service what became of the copies since the last time."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._done and not self._dropped:
            return
        data = frames.frame({"done": self._done, "dropped": self._dropped})
        self._done, self._dropped = {}, {}
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(data)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("could not check the shadow pipelines' workers")

    async def sweep(self) -> None:
        """Stop the workers of pipelines that are no longer a shadow of their deployment."""
        for key, (path, pipeline) in list(self._keys.items()):
            endpoint = await self.endpoints.lookup(path)
            variant = endpoint.variant(pipeline) if endpoint is not None else None
            if endpoint is not None and pipeline in endpoint.rule.shadow \
                    and variant is not None and variant.worker_key == key:
                continue
            del self._keys[key]
            log.info("stopping the shadow workers of %s: no longer a shadow of %s",
                     pipeline, path)
            await self.dispatcher.pool.stop(key)


async def serve(settings: Settings, connection: socket.socket) -> None:
    # imported here: the application, not this module's importers, needs them
    from gristmill_platform.app import assemble_app, build_services, build_state
    from gristmill_platform.executions.journal import replay_spools
    from gristmill_platform.executions.shadow_api import LoopbackApi
    from gristmill_platform.runtime_site import ensure_runtime_site

    # its workers call the API here, where their execution tokens are known at once
    api = LoopbackApi()
    state = build_state(settings.model_copy(update={"internal_url": api.url}))
    runtime_site = await asyncio.to_thread(ensure_runtime_site,
                                           state.settings.data_dir / "runtime")
    # a runner killed before: what it answered and had not written
    await replay_spools(state.session_factory, state.settings.data_dir)
    services = build_services(state, runtime_site)
    state.started = services
    executions = services.executions
    await api.start(assemble_app(state), state.settings.log_level)
    reader, writer = await asyncio.open_unix_connection(sock=connection)
    runner = CopyRunner(services.endpoints, executions.low_latency,
                        state.settings.step_build_wait_s, writer)
    serving = asyncio.current_task()
    if serving is not None:  # stopped on its own: what it recorded is written first
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, serving.cancel)
    try:
        await runner.serve(reader)
        await runner.drain(DRAIN_S)
    finally:
        await executions.low_latency.shutdown()
        await api.stop()  # its workers are stopped: nothing calls it any more
        await executions.shutdown()
        await services.builds.shutdown()
        await state.engine.dispose()
        state.transactions.close()
        runner.account()
        writer.close()


def lower_priority() -> None:
    """Nice RUNNER_NICE, and where Linux offers it the SCHED_IDLE policy: a CPU running
    only such tasks counts as idle when the kernel places a waking task, so the answering
    chain (the control service, its worker, the caller) takes it at once, which niceness
    alone does not ensure. Its workers inherit both."""
    with contextlib.suppress(OSError):
        os.nice(RUNNER_NICE)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop, as the control service's own (uvicorn picks it): the runner
    does the service's socket work for each copy, on the same loop. (Measured against
    asyncio's pure-Python loop: the runner's CPU per copy and the shadow overhead moved
    within the noise, docs/performance-log.md#rollout.) None (asyncio's) where uvloop is not
    installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    connection = socket.socket(fileno=int(args[0]))
    # from the control service that started it, through a pipe only the two hold
    settings: Any = pickle.loads(sys.stdin.buffer.read())  # noqa: S301
    assert isinstance(settings, Settings)
    from gristmill_platform.logs import logging_config

    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    lower_priority()
    # Ctrl-C in a terminal reaches the whole process group: the control service stops it
    # (closing its end) once it has stopped taking calls
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(settings, connection))


if __name__ == "__main__":
    main()
