"""The periodic scheduler's tick when nothing is due: it looks with a plain read and
opens no transaction, so it never makes the execution journal write what it holds on the
event loop (Transactions' barrier) once a second while warm calls are in flight. That a
due deployment is still claimed and fired is tested end to end (test_deployments.py,
test_scheduler_replicas.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.transactions import Transactions
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments.factory import DeploymentServices
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.scheduler import PeriodicScheduler
from gristmill_platform.deployments.service import DeploymentService
from gristmill_platform.executions.service import Launch


def test_a_tick_with_nothing_due_opens_no_transaction(own_database_url: str) -> None:
    async def scenario() -> tuple[int, list[str]]:
        engine = create_engine(own_database_url)
        try:
            transactions = Transactions(create_session_factory(engine))
            seen: list[str] = []
            launched: list[Launch] = []

            async def barrier() -> None:
                seen.append("barrier")

            class Refusing(DeploymentServices):
                def __init__(self) -> None:  # nothing to build: it must not be called
                    pass

                def __call__(self, session: AsyncSession) -> DeploymentService:
                    seen.append("transaction")
                    raise AssertionError("a transaction was opened with nothing due")

            transactions.barrier = barrier
            scheduler = PeriodicScheduler(transactions, Refusing(), launched.append,
                                          tick_s=1)
            return await scheduler.tick(), seen + [str(launch) for launch in launched]
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == (0, [])


def test_any_due_sees_only_enabled_periodic_deployments_whose_time_has_come(
        own_database_url: str) -> None:
    async def scenario() -> list[bool]:
        engine = create_engine(own_database_url)
        try:
            factory = create_session_factory(engine)
            now = utcnow()
            async with factory() as session, session.begin():
                step = Step(id=new_id(), name=f"tick-{new_id()[:8]}", function_path="main.py",
                            function_name="tick", origin="local")
                pipeline = Pipeline(id=new_id(), name=step.name, step_id=step.id)
                session.add(step)
                await session.flush()
                session.add(pipeline)
                await session.flush()

                def deployment(rule: str, enabled: bool, due_in: timedelta | None
                               ) -> Deployment:
                    return Deployment(
                        id=new_id(), name=f"d-{new_id()[:12]}", pipeline_id=pipeline.id,
                        pipeline_name=pipeline.name, execution_rule=rule, mode="elastic",
                        is_enabled=enabled, schedule="* * * * *" if rule == "periodic" else None,
                        next_fire_at=None if due_in is None else now + due_in)

                session.add_all([
                    deployment("periodic", True, timedelta(minutes=1)),  # not yet
                    deployment("periodic", False, -timedelta(minutes=1)),  # disabled
                    deployment("periodic", True, None),  # no next fire time
                    deployment("endpoint", True, -timedelta(minutes=1)),  # not periodic
                ])
            seen = []
            async with factory() as session:
                repository = DeploymentRepository(session)
                seen.append(await repository.any_due(now))
                seen.append(await repository.any_due(now + timedelta(minutes=2)))
            return seen
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == [False, True]


def new_id() -> str:
    return str(uuid.uuid4())
