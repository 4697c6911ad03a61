"""The endpoint gateway's view of deployments: what a trigger needs (the deployment, its
pipeline and step), kept in memory so that a call to a warm worker costs no query.

An entry is reloaded when this process has changed a deployment, pipeline or step since it
was loaded (db/changes.py) or when it is older than TTL_S: a change made through another
control service process sharing the database (a rotated token, a disabled deployment)
takes effect here within TTL_S. Entries in use are reloaded ahead of that, in the
background (db/refresh.py)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gristmill_platform.db import changes
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.refresh import BackgroundReloads, Freshness, freshness
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.executions.io import OutputPlan, plan_outputs
from gristmill_platform.pipelines.repository import PipelineRepository

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from gristmill_platform.traffic import Traffic

TTL_S = 1.0
for _model in (Deployment, Pipeline, Step):
    changes.watch(_model)


def _version() -> tuple[int, int, int]:
    return (changes.version(Deployment), changes.version(Pipeline), changes.version(Step))


@dataclass(frozen=True)
class Endpoint:
    """Detached, read-only rows: never modified, never attached to a session."""

    deployment: Deployment
    pipeline: Pipeline | None
    step: Step | None

    @functools.cached_property
    def fast(self) -> bool:
        """Tracked through the journal (executions/journal.py): a warm worker, and no file
        to copy in or out, which the data store would need a transaction for."""
        return (self.deployment.mode == "low_latency" and self.step is not None
                and not any(io["data_type"] == "file"
                            for io in (*self.step.inputs, *self.step.outputs)))


    @functools.cached_property
    def output_plans(self) -> list[OutputPlan]:
        """Where each output goes: the same for every call of an entry, planned once."""
        assert self.step is not None
        return plan_outputs(self.step.outputs, self.deployment.outputs_mapping,
                            allow_endpoint=True)


@dataclass(frozen=True)
class _Entry:
    endpoint: Endpoint | None
    loaded_at: float
    version: tuple[int, int, int]


class EndpointDirectory:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], traffic: Traffic
                 ) -> None:
        self.session_factory = session_factory
        self._entries: dict[str, _Entry] = {}
        self._reloads = BackgroundReloads(traffic)

    async def lookup(self, name: str) -> Endpoint | None:
        """The endpoint deployment answering at /endpoints/<name> (its URL path, by default
        its name), or None."""
        entry = self._entries.get(name)
        if entry is None or entry.version != _version():
            return (await self._load(name)).endpoint
        age = freshness(time.monotonic() - entry.loaded_at, TTL_S)
        if age is Freshness.STALE:
            return (await self._load(name)).endpoint
        if age is Freshness.AHEAD:
            self._reloads.start(name, lambda: self._load(name))
        return entry.endpoint

    async def _load(self, name: str) -> _Entry:
        version = _version()  # before reading: a change committed meanwhile reloads again
        now = time.monotonic()
        # a plain session, not a Transactions: nothing here waits for the journal
        async with self.session_factory() as session:
            deployment = await DeploymentRepository(session).by_endpoint_path(name)
            endpoint = None
            if deployment is not None and deployment.execution_rule == "endpoint":
                found = await PipelineRepository(session).with_step(deployment.pipeline_name)
                pipeline, step = found if found is not None else (None, None)
                endpoint = Endpoint(deployment, pipeline, step)
        entry = _Entry(endpoint, now, version)
        if len(self._entries) > 10_000:  # names probed at random must not grow it forever
            self._entries.clear()
        self._entries[name] = entry
        return entry
