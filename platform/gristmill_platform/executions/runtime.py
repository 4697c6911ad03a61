"""The execution machinery that lives as long as the control service: launching workers
after a run is committed, noticing workers that die, waking long-polls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService
from gristmill_platform.db.types import utcnow
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.events import ExecutionEvents
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.executions.service import ExecutionService, Launch
from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.local import LocalExecutor
from gristmill_platform.executors.spec import LaunchSpec, PollResult, WorkerState
from gristmill_platform.executors.workers import WorkerPool
from gristmill_platform.steps.environments import python_of
from gristmill_platform.steps.repository import StepRepository

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from gristmill_platform.state import AppState

log = logging.getLogger("gristmill.executions")
HEARTBEAT_TIMEOUT = timedelta(seconds=45)
RECONCILE_EVERY_S = 5.0
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR")


def execution_service(state: AppState, session: AsyncSession) -> ExecutionService:
    assert state.settings.secret_key
    auth = AuthService(UserRepository(session), TokenRepository(session),
                       signing_key=state.settings.secret_key,
                       access_token_ttl_s=state.settings.access_token_ttl_s)
    return ExecutionService(ExecutionRepository(session), state.datastore(session), auth)


class ExecutionRuntime:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.events = ExecutionEvents()
        self.executor = LocalExecutor(state.settings.data_dir / "workers", self._worker_exited)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconciler: asyncio.Task[None] | None = None
        # the warm workers of low-latency deployments, and what runs executions on them
        # (imported here: both import this module's helpers)
        from gristmill_platform.executions.low_latency import LowLatencyDispatcher
        from gristmill_platform.executors.pools import worker_pool

        self.workers: WorkerPool = worker_pool(state)
        self.low_latency = LowLatencyDispatcher(state, self.workers)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- launching ----------------------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        """Start the worker; call once the execution is committed."""
        if launch.low_latency:
            self._spawn(self.low_latency.dispatch(launch))
            return
        self._spawn(self._launch(launch))

    async def _launch(self, launch: Launch) -> None:
        from gristmill_platform.deps import transaction

        try:
            async with transaction(self.state) as session:
                step = await StepRepository(session).get(launch.step_id)
                variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
            if step is None or not step.environment_key:
                raise RuntimeError("the step's environment is missing; create the step again")
            spec = self._spec(launch, step.environment_key, variables)
            handle = await self.executor.submit(spec)
            async with transaction(self.state) as session:
                execution = await ExecutionRepository(session).get(launch.execution_id)
                if execution is not None:
                    execution.handle = handle
                    execution.worker = f"local-{handle['pid']}"
        except Exception as exc:
            log.exception("could not launch %s", launch.execution_id)
            await self._fail(launch.execution_id, f"could not start the worker: {exc}")

    def _spec(self, launch: Launch, environment_key: str, variables: dict[str, str]
              ) -> LaunchSpec:
        settings = self.state.settings
        url = settings.environment_url
        code = self.state.builds.code_dir(launch.step_id)
        python = python_of(self.state.builds.environment_dir(environment_key))
        env = {
            **{k: v for k, v in os.environ.items() if k in PASSED_ENV},
            **variables,
            "GRISTMILL_ENVIRONMENT_URL": url,
            "CRAFT_AI_ENVIRONMENT_URL": url,
            "CRAFT_AI_CONTROL_URL": url,
            "GRISTMILL_SDK_TOKEN": launch.sdk_token,
            "CRAFT_AI_SDK_TOKEN": launch.sdk_token,
            "GRISTMILL_EXECUTION_ID": launch.execution_id,
            "CRAFT_AI_EXECUTION_ID": launch.execution_id,
            "GRISTMILL_STEP_DIR": str(code),
            "GRISTMILL_IO_DIR": str(self.executor.io_dir(launch.execution_id)),
            "SDK_VERBOSE_LOG": "false",
            "PYTHONUNBUFFERED": "1",
        }
        return LaunchSpec(
            execution_id=launch.execution_id, step_name="", pipeline_name="",
            language="", argv=(str(python), "-m", "gristmill.runtime", "run"), env=env,
        )

    # -- endings ------------------------------------------------------------------------------

    async def finished(self, execution_id: str) -> None:
        """After a runner's finish committed: wake waiters, tidy the worker."""
        self.events.notify(execution_id)

    async def _worker_exited(self, execution_id: str, outcome: PollResult,
                             tail: Sequence[LogLine]) -> None:
        if outcome.state == WorkerState.SUCCEEDED:
            reason = "the worker exited without reporting a result"
        else:
            reason = outcome.reason or "the worker failed"
        await self._fail(execution_id, reason, [line.message for line in tail][-50:],
                         only_if_silent=outcome.state == WorkerState.SUCCEEDED)
        await self.executor.cleanup({"execution_id": execution_id})

    async def _fail(self, execution_id: str, reason: str, tail: Sequence[str] = (),
                    *, only_if_silent: bool = False) -> None:
        from gristmill_platform.deps import transaction

        try:
            async with transaction(self.state) as session:
                service = execution_service(self.state, session)
                execution = await service.repository.get(execution_id)
                if execution is None or execution.status not in t.ACTIVE:
                    return
                if only_if_silent and execution.status == t.PENDING:
                    reason = "the worker exited before starting the step"
                await service.fail(execution_id, reason, tail)
                await service.auth.revoke_execution_tokens(execution_id)
        finally:
            self.events.notify(execution_id)

    # -- reconciling --------------------------------------------------------------------------

    def start(self) -> None:
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_forever())

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed")
            await asyncio.sleep(RECONCILE_EVERY_S)

    async def reconcile(self) -> None:
        """Executions gone quiet: ask the backend, fail those whose worker is gone."""
        from gristmill_platform.deps import transaction

        async with transaction(self.state) as session:
            active = await ExecutionRepository(session).active()
            now = utcnow()
            quiet = [(e.id, e.handle) for e in active
                     if (e.heartbeat_at or e.created_at) < now - HEARTBEAT_TIMEOUT]
        for execution_id, handle in quiet:
            if handle is None:
                await self._fail(execution_id, "no worker was started for this execution")
                continue
            result = await self.executor.poll(handle)
            if result.state not in (WorkerState.RUNNING, WorkerState.PENDING):
                await self._fail(execution_id, result.reason or "the worker is gone")

    async def shutdown(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(BaseException):
                await self._reconciler
        await self.executor.shutdown()
        for task in list(self._tasks):
            task.cancel()
