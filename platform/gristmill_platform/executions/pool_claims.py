"""A pool pod's claim: which execution it was given, with that execution's environment
and a freshly minted execution token (executors/kubernetes/elastic_pool.py).

Any replica answers: the execution is found in the database (its worker is the pod), not
in the memory of the replica that gave it. The long-poll waits on this replica's wake-up
(the execution was given here) and looks again every ``RECHECK_S`` (given by another).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gristmill_platform.auth.principal import EXECUTION_SCOPE
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.errors import Conflict, Forbidden, NotFound, Unauthorized
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.executions.runner_env import IMAGE_STEP_DIR, runner_env
from gristmill_platform.logs import redactor

if TYPE_CHECKING:
    from gristmill_platform.executors.kubernetes.elastic_pool import ElasticPool

RECHECK_S = 0.5
MAX_WAIT_S = 60.0
# What the pool pod has of its own and keeps (its image's step folder, its I/O volume).
POD_OWN = ("GRISTMILL_STEP_DIR", "GRISTMILL_IO_DIR")


@dataclass(frozen=True)
class Assignment:
    execution_id: str
    env: dict[str, str]


class PoolClaims:
    def __init__(self, transactions: Transactions, executions: ExecutionServices,
                 pool: ElasticPool | None, worker_url: str) -> None:
        self.transactions = transactions
        self.executions = executions
        self.pool = pool
        self.worker_url = worker_url

    async def claim(self, pod: str, step_id: str, token: str, wait_s: float
                    ) -> Assignment | None:
        """The execution given to ``pod``, or None once ``wait_s`` passed without one.

        Refused: a control service without a pool (404), a wrong token for this pod and
        step (401), an execution of another step (403), a pod whose execution already
        started (409: a pool pod runs exactly one execution).
        """
        pool = self.pool
        if pool is None:
            raise NotFound("This control service keeps no elastic pool (the executor is not "
                           "kubernetes, or GRISTMILL_KUBERNETES_ELASTIC_POOL_SIZE is 0)")
        if not pool.verify(pod, step_id, token):
            raise Unauthorized(f"Pool pod {pod!r}: the pool token is not valid for this pod "
                               "and step")
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            found = await self._given(pod, step_id)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await pool.wait_assigned(pod, min(left, RECHECK_S))

    async def _given(self, pod: str, step_id: str) -> Assignment | None:
        async with self.transactions() as session:
            execution = await ExecutionRepository(session).active_on_worker(pod)
            if execution is None:
                return None
            if execution.step_id != step_id:
                raise Forbidden(f"Pool pod {pod!r} belongs to the pool of step {step_id}: it "
                                f"cannot run execution {execution.id} of another step")
            if execution.status != t.PENDING:
                raise Conflict(f"Pool pod {pod!r} already took execution {execution.id} "
                               f"({execution.status}): a pool pod runs exactly one execution",
                               name="AlreadyTaken")
            if execution.created_by is None:
                raise Conflict(f"Execution {execution.id} has no creator to run it as")
            service = self.executions(session)
            # the launch's token is in the memory of the replica that launched it, if any:
            # the pod gets one of its own, the only one left valid
            await service.auth.revoke_execution_tokens(execution.id)
            created = await service.auth.create_sdk_token(
                execution.created_by, name=f"execution {execution.id}",
                scope=EXECUTION_SCOPE, execution_id=execution.id)
            variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
            redactor.register(*variables.values())
            env = runner_env(self.worker_url, created.plaintext, execution.id,
                             IMAGE_STEP_DIR, None, variables)
            for name in POD_OWN:
                env.pop(name, None)
            return Assignment(execution.id, env)
