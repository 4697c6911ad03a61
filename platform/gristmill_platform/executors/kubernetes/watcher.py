"""Follows the pods of elastic executions until they end and are cleaned up.

A local worker is a child process: the local executor learns at once when it exits. A pod
says nothing by itself, so the control service polls the pods it launched (one GET per
pod and tick) and hands each ended one to ``on_end``, which records the outcome and
cleans the pod up. A pod stays followed until ``on_end`` returns True, so a failed
cleanup (the API or the database unreachable) is tried again on the next tick.

Only the pods this process launched (or adopted at start, or was asked to stop) are
followed; the reconciler covers executions whose control service went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.spec import Handle, PollResult, WorkerState

log = logging.getLogger("gristmill.executors.kubernetes")

# on_end(execution_id, handle, outcome) -> True once the pod is cleaned up
EndHook = Callable[[str, Handle, PollResult], Awaitable[bool]]
ENDED = (WorkerState.SUCCEEDED, WorkerState.FAILED)
# After this many failed attempts at handling one ended pod, it is left alone (and said
# so), rather than retried every tick forever.
MAX_ATTEMPTS = 30


class PodWatcher:
    def __init__(self, executor: KubernetesExecutor, on_end: EndHook, interval_s: float) -> None:
        self.executor = executor
        self.on_end = on_end
        self.interval_s = interval_s
        self._handles: dict[str, Handle] = {}
        self._attempts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def follow(self, handle: Handle) -> None:
        self._handles[str(handle["execution_id"])] = handle

    def following(self) -> list[str]:
        return sorted(self._handles)

    async def check(self) -> None:
        """One pass over the followed pods."""
        for execution_id, handle in list(self._handles.items()):
            try:
                outcome = await self.executor.poll(handle)
            except Exception:  # the API is unreachable: the pod is still there to ask
                log.warning("could not read the pod of %s", execution_id, exc_info=True)
                continue
            if outcome.state not in ENDED:
                continue
            try:
                done = await self.on_end(execution_id, handle, outcome)
            except Exception:
                log.exception("could not record the end of the pod of %s", execution_id)
                done = False
            if done:
                self._forget(execution_id)
                continue
            attempts = self._attempts[execution_id] = self._attempts.get(execution_id, 0) + 1
            if attempts >= MAX_ATTEMPTS:
                log.error("giving up on the pod %s of execution %s after %d attempts; delete "
                          "it by hand", handle.get("name"), execution_id, attempts)
                self._forget(execution_id)

    def _forget(self, execution_id: str) -> None:
        self._handles.pop(execution_id, None)
        self._attempts.pop(execution_id, None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
