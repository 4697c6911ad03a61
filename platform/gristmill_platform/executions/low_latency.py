"""Executions of low-latency deployments: carried to a warm worker by the pool
(executors/workers.py), recorded here the same way whatever the backend.

``dispatch`` records in the database as the elastic path does: the start in one
transaction once the worker takes the execution, the end in another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from gristmill_platform.db.models.env_vars import EnvironmentVariable
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Step
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import AppError, Conflict, NotFound
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.service import MAX_LOG_LINES_PER_CALL, Launch
from gristmill_platform.executors.workers import ExecutionLost, WorkerPool

if TYPE_CHECKING:
    from gristmill_platform.state import AppState

log = logging.getLogger("gristmill.low_latency")

# Under the reconciler's 45 s: executions waiting in line or running on a worker are
# alive as long as this process holds them.
HEARTBEAT_S = 10.0
TAIL_LINES = 50
SHUTDOWN_GRACE_S = 3.0


class LowLatencyDispatcher:
    def __init__(self, state: AppState, pool: WorkerPool) -> None:
        self.state = state
        self.pool = pool
        self._held: set[str] = set()  # executions waiting for or running on a worker
        self._idle = asyncio.Event()
        self._idle.set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def dispatch(self, launch: Launch) -> None:
        """Run a committed execution on its deployment's worker and record its end."""
        execution_id = launch.execution_id
        self._hold(execution_id)
        try:
            answer = await self.pool.run(launch.deployment_name or "",
                                         lambda pod_id: self._start(launch, pod_id))
            if answer is not None:
                await self._finish(execution_id, answer.report, answer.answered_at)
        except ExecutionLost as lost:
            await self._fail(execution_id, lost.reason, lost.tail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("low-latency dispatch of %s failed", execution_id)
            await self._fail(execution_id, f"the low-latency worker could not run it: {exc}")
        finally:
            self._release(execution_id)

    async def shutdown(self) -> None:
        """Stop the workers; the executions they ran are failed by their dispatches, which
        get a moment to record it while the database is still there."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.pool.shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), SHUTDOWN_GRACE_S)

    # -- recording ----------------------------------------------------------------------------

    async def _start(self, launch: Launch, pod_id: str) -> dict[str, Any] | None:
        from gristmill_platform.deps import transaction
        from gristmill_platform.executions.runtime import execution_service

        execution_id = launch.execution_id
        async with transaction(self.state) as session:
            service = execution_service(self.state, session)
            execution = await service.repository.get(execution_id)
            step = (await session.get(Step, execution.step_id)
                    if execution is not None else None)
            try:
                payload = await service.start(execution_id, step)
            except (NotFound, Conflict):
                return None  # deleted, cancelled or already started: nothing to run
            if execution is not None:
                execution.worker = pod_id
                # No pid on purpose: cancelling one execution must not kill the worker the
                # others share. Should this control service die while it runs, the
                # reconciler finds this handle and fails it as "the worker is gone".
                execution.handle = {"backend": "local-low-latency", "pod_id": pod_id,
                                    "execution_id": execution_id}
            # plain rows, not ORM objects: this runs for every execution
            rows = await session.execute(select(EnvironmentVariable.name,
                                                EnvironmentVariable.value))
            variables = {name: value for name, value in rows}
        return {**payload, "sdk_token": launch.sdk_token, "env": variables}

    async def _finish(self, execution_id: str, report: dict[str, Any],
                      ended_at: datetime) -> None:
        from gristmill_platform.deps import transaction
        from gristmill_platform.executions.runtime import execution_service

        lines = report.get("logs")
        lines = lines if isinstance(lines, list) else []
        try:
            async with transaction(self.state) as session:
                service = execution_service(self.state, session)
                # finish takes one batch of lines: an execution that printed more has the
                # earlier ones stored first, in order
                while len(lines) > MAX_LOG_LINES_PER_CALL:
                    await service.append_logs(execution_id, lines[:MAX_LOG_LINES_PER_CALL],
                                              heartbeat=False)
                    lines = lines[MAX_LOG_LINES_PER_CALL:]
                # Conflict: already ended (cancelled, or failed by the reconciler)
                with contextlib.suppress(Conflict):
                    await service.finish(execution_id, {**report, "logs": lines},
                                         ended_at=ended_at)
                await service.auth.revoke_execution_tokens(execution_id)
        except NotFound:
            pass  # deleted while it ran
        except AppError as exc:
            await self._fail(execution_id, f"the result could not be recorded: {exc.message}")
            return
        self.state.executions.events.notify(execution_id)

    async def _fail(self, execution_id: str, reason: str, tail: Sequence[str] = ()) -> None:
        try:
            await self.state.executions._fail(execution_id, reason, list(tail)[-TAIL_LINES:])
        except Exception:
            log.exception("could not record the failure of %s", execution_id)

    # -- liveness -----------------------------------------------------------------------------

    def _hold(self, execution_id: str) -> None:
        self._held.add(execution_id)
        self._idle.clear()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_forever())

    def _release(self, execution_id: str) -> None:
        self._held.discard(execution_id)
        if not self._held:
            self._idle.set()

    async def _heartbeat_forever(self) -> None:
        """Executions held here are alive: without this the reconciler would fail one that
        waits in line (or runs) for longer than its heartbeat timeout."""
        from gristmill_platform.deps import transaction

        while True:
            await asyncio.sleep(HEARTBEAT_S)
            held = list(self._held)
            if not held:
                continue
            try:
                async with transaction(self.state) as session:
                    await session.execute(
                        update(Execution)
                        .where(Execution.id.in_(held), Execution.status.in_(t.ACTIVE))
                        .values(heartbeat_at=utcnow())
                        .execution_options(synchronize_session=False))
            except Exception:
                log.exception("could not record the heartbeat of low-latency executions")
