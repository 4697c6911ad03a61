"""The runner's calls that change an execution (start, logs, finish), whichever way they
arrive: over HTTP (runtime_routes.py, with the execution token) or over a forked local
worker's channel (local_channel.py, whose socket is the credential). One implementation,
so that both give the same transitions, checks, records and answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gristmill_platform.db.transactions import Transactions
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.repository import ExecutionOutcome

Finished = Callable[[str, str | None, ExecutionOutcome], Awaitable[None]]


class RuntimeCalls:
    def __init__(self, transactions: Transactions, executions: ExecutionServices,
                 finished: Finished) -> None:
        self.transactions = transactions
        self.executions = executions
        self.finished = finished

    async def start(self, execution_id: str) -> dict[str, Any]:
        """What to run; the execution is running from now on (409 if it is not pending)."""
        async with self.transactions() as session:
            return await self.executions(session).start_elastic(execution_id)

    async def logs(self, execution_id: str, body: Mapping[str, Any]) -> dict[str, int]:
        lines = body.get("lines") or []
        if not isinstance(lines, list):
            raise BadRequest("lines must be a list")
        async with self.transactions() as session:
            return {"accepted": await self.executions(session).append_logs(execution_id,
                                                                           lines)}

    async def finish(self, execution_id: str, report: Mapping[str, Any]) -> dict[str, Any]:
        """The runner's report, judged and recorded with the end of the execution; its
        execution tokens are revoked in the same transaction."""
        if report.get("status") not in ("succeeded", "failed"):
            raise BadRequest("status must be 'succeeded' or 'failed'")
        async with self.transactions() as session:
            service = self.executions(session)
            execution = await service.finish(execution_id, report)
            await service.auth.revoke_execution_tokens(execution_id)
            status, reason = execution.status, execution.status_reason
            parent_id = execution.parent_id
            ending = ExecutionOutcome(execution_id, execution.deployment_id, status, reason,
                                      list(execution.outputs or []))
        await self.finished(execution_id, parent_id, ending)
        return {"status": status, "reason": reason}
