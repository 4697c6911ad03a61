"""The endpoint gateway's view of deployments: what a trigger needs (the deployment, its
pipeline and step), kept in memory so that a call to a warm worker costs no query.

An entry is reloaded when this process has changed a deployment, pipeline or step since it
was loaded (db/changes.py) or when it is older than TTL_S: a change made through another
control service process sharing the database (a rotated token, a disabled deployment)
takes effect here within TTL_S. Entries in use are reloaded ahead of that, in the
background (db/refresh.py)."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gristmill_platform.db import changes
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.models.traffic import DeploymentTraffic
from gristmill_platform.db.refresh import BackgroundReloads, Freshness, freshness
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.traffic import NO_RULE, TrafficRule, parse_rule
from gristmill_platform.executions.io import OutputPlan, plan_outputs
from gristmill_platform.executors.workers import variant_key
from gristmill_platform.pipelines.repository import PipelineRepository

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from gristmill_platform.traffic import Traffic

TTL_S = 1.0
for _model in (Deployment, Pipeline, Step, DeploymentTraffic):
    changes.watch(_model)


def _version() -> tuple[int, ...]:
    return (changes.version(Deployment), changes.version(Pipeline), changes.version(Step),
            changes.version(DeploymentTraffic))


@dataclass(frozen=True)
class Endpoint:
    """Detached, read-only rows: never modified, never attached to a session."""

    deployment: Deployment
    pipeline: Pipeline | None
    step: Step | None
    # its traffic rule (deployments/traffic.py) and validations (deployments/validations.py)
    rule: TrafficRule = NO_RULE
    validations: Mapping[str, str] = field(default_factory=dict)
    # the pipelines the rule names, other than the deployment's own, by name
    variants: Mapping[str, Endpoint] = field(default_factory=dict)

    @property
    def worker_key(self) -> str:
        """Its warm workers' key in the pool: a variant's are its own."""
        own = self.deployment.pipeline_name
        if self.pipeline is None or self.pipeline.name == own:
            return self.deployment.name
        return variant_key(self.deployment.name, self.pipeline.name)

    @property
    def path(self) -> str:
        """Where it answers: /endpoints/<path> (its chosen path, or its name)."""
        return self.deployment.endpoint_url_path or self.deployment.name

    @property
    def pipeline_name(self) -> str:
        return self.pipeline.name if self.pipeline is not None \
            else self.deployment.pipeline_name

    def variant(self, pipeline_name: str) -> Endpoint | None:
        """The endpoint as pipeline_name answers it (None: a pipeline deleted since)."""
        if pipeline_name == self.deployment.pipeline_name:
            return self
        return self.variants.get(pipeline_name)

    @functools.cached_property
    def fast(self) -> bool:
        """Tracked through the journal (executions/journal.py): a warm worker, and no file
        to copy in or out, which the data store would need a transaction for."""
        return (self.deployment.mode == "low_latency" and self.step is not None
                # a multi-step pipeline's nodes are recorded in the database, one by one
                and (self.pipeline is None or self.pipeline.graph is None)
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
    version: tuple[int, ...]


class EndpointDirectory:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], traffic: Traffic
                 ) -> None:
        self.session_factory = session_factory
        self._entries: dict[str, _Entry] = {}
        self._reloads = BackgroundReloads(traffic)
        # draws the random splits of traffic rules (deployments/traffic.py); tests seed it
        self.rng = random.Random()

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

    async def reload(self, name: str) -> Endpoint | None:
        """lookup, read from the database now whatever this process has seen (a change
        made through another process may be less than TTL_S old)."""
        return (await self._load(name)).endpoint

    async def _load(self, name: str) -> _Entry:
        version = _version()  # before reading: a change committed meanwhile reloads again
        now = time.monotonic()
        # a plain session, not a Transactions: nothing here waits for the journal
        async with self.session_factory() as session:
            deployment = await DeploymentRepository(session).by_endpoint_path(name)
            endpoint = None
            if deployment is not None and deployment.execution_rule == "endpoint":
                pipelines = PipelineRepository(session)
                found = await pipelines.with_step(deployment.pipeline_name)
                pipeline, step = found if found is not None else (None, None)
                traffic = await session.get(DeploymentTraffic, deployment.id)
                rule = parse_rule(traffic.rule) if traffic is not None else NO_RULE
                validations = dict(traffic.validations) if traffic else {}
                variants: dict[str, Endpoint] = {}
                for variant in sorted(rule.pipelines() - {deployment.pipeline_name}):
                    other = await pipelines.with_step(variant)
                    if other is not None:
                        # the deployment's validations judge every pipeline it routes to,
                        # as for an elastic deployment (docs/rollout.md)
                        variants[variant] = Endpoint(deployment, *other,
                                                     validations=validations)
                endpoint = Endpoint(deployment, pipeline, step, rule, validations, variants)
        entry = _Entry(endpoint, now, version)
        if len(self._entries) > 10_000:  # names probed at random must not grow it forever
            self._entries.clear()
        self._entries[name] = entry
        return entry
