"""Warm workers that follow what another control service sharing the database does to
their deployments (docs/rollout.md#replicas).

On the local backend each control service runs its own warm workers. Every
``worker_follow_s`` (0.5 s by default) this checks the deployments whose workers this
process holds against the database, in one query for all of them (their ids and
generations):

* gone (deleted; or deleted and created again under its name, which is another id): its
  workers stop, its variants' and its nodes' with them, as a deletion made here stops
  them. A call to a new deployment of that name brings its workers up (as any deployment
  created through another control service: LocalWorkerPool._adopt_once);
* a newer generation (updated): its own workers roll, and the pools of a multi-step
  pipeline's nodes, as update_deployment rolls them where it is made. A variant's roll
  at its next call (LowLatencyDispatcher.warm), which also follows its pipeline.

Nothing here is on a call's path, and a call does not wait for it: it compares the
deployment it read (the endpoint directory's, at most 1 s old) with the versions of its
workers in memory, and waits for the roll itself when they are behind
(LowLatencyDispatcher.follow). On Kubernetes the pools hold no versions (shared worker
Deployments follow every change by themselves): nothing is queried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gristmill_platform.db.transactions import Transactions
from gristmill_platform.executors.deployment_logs import DeploymentRecordsFor
from gristmill_platform.executors.workers import Version, WorkerPool, node_step, split_key
from gristmill_platform.traffic import Traffic

log = logging.getLogger("gristmill.workers")
# At most this long each check waits for a moment with no warm call in flight (traffic.py).
QUIET_WAIT_S = 0.1


def judge(held: dict[str, set[Version]], current: dict[str, int]
          ) -> tuple[list[str], list[str]]:
    """(the deployments whose workers must stop, the keys whose workers must roll), from
    the versions held per pool key and the generations in the database by id."""
    known: dict[str, bool] = {}  # deployment name -> does any of its keys' ids exist
    rolls: list[str] = []
    for key, versions in held.items():
        name, variant = split_key(key)
        alive = {deployment_id for deployment_id, _ in versions if deployment_id in current}
        known[name] = known.get(name, False) or bool(alive)
        own = variant is None or node_step(key) is not None
        # a roll under way already holds the new version: nothing to start again
        if own and any((deployment_id, current[deployment_id]) not in versions
                       for deployment_id in alive):
            rolls.append(key)
    gone = sorted(name for name, exists in known.items() if not exists)
    return gone, [key for key in rolls if split_key(key)[0] not in gone]


class WorkerFollowing:
    def __init__(self, pool: WorkerPool, transactions: Transactions,
                 deployments: DeploymentRecordsFor, *, interval_s: float,
                 traffic: Traffic | None = None) -> None:
        self.pool = pool
        self.transactions = transactions
        self.deployments = deployments
        self.interval_s = interval_s
        self.traffic = traffic
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.traffic is not None:
                # its query takes the loop for a moment, in pieces: a warm call in flight
                # would wait for them (traced, docs/performance-log.md#latency)
                await self.traffic.quiet(QUIET_WAIT_S)
            try:
                await self.check()
            except Exception:
                log.exception("could not check the warm workers against the database")

    async def check(self) -> None:
        """One pass: stop the workers of deployments deleted, roll those updated."""
        held = {key: versions for key in self.pool.deployment_names()
                if (versions := self.pool.versions(key))}
        if not held:
            return
        ids = {deployment_id for versions in held.values() for deployment_id, _ in versions}
        # A plain session, not a transaction of Transactions: this reads deployments only,
        # and the journal's barrier, run every interval, wrote whatever calls were
        # pending on the event loop, running ones included (docs/performance-log.md#latency).
        async with self.transactions.session_factory() as session:
            current = await self.deployments(session).generations(ids)
        gone, rolls = judge(held, current)
        for name in gone:
            log.info("deployment %s was deleted through another control service: its warm "
                     "workers here stop", name)
            await self.pool.stop(name)
        for key in rolls:
            log.info("deployment %s was updated through another control service: its warm "
                     "workers here roll", split_key(key)[0])
            await self.pool.ensure(key, wait_s=0)
