"""An execution whose pipeline is deleted while it runs is still tracked (executions/journal.py,
journal_writes.py): the deletion sets the executions' pipeline_id to NULL (ON DELETE SET
NULL) and keeps them; the journal must not write the deleted id back, which the foreign
key refused, dropping the row. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import delete, select

from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Pipeline
from gristmill_platform.db.types import utcnow
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.journal import TrackingJournal
from tests.platform.test_low_latency_tracking import journal_of, journal_state, record, seed

__all__ = ["journal_state"]  # the fixture


async def a_pipeline(state: Any, deployment_id: str) -> str:
    """Another pipeline of the deployment's step (a variant's, say)."""
    async with state.session_factory() as session, session.begin():
        deployment = await session.get(Deployment, deployment_id)
        assert deployment is not None
        own = await session.get(Pipeline, deployment.pipeline_id)
        assert own is not None
        pipeline = Pipeline(id=str(uuid.uuid4()), name=f"v-{uuid.uuid4().hex[:8]}",
                            step_id=own.step_id)
        session.add(pipeline)
    return pipeline.id


async def delete_pipeline(state: Any, pipeline_id: str) -> None:
    """Through the ORM: this process sees the deletion (db/changes.py)."""
    async with state.session_factory() as session, session.begin():
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        await session.delete(pipeline)


async def delete_elsewhere(state: Any, pipeline_id: str) -> None:
    """As another process would: nothing tells this one."""
    async with state.engine.begin() as connection:
        await connection.execute(delete(Pipeline).where(Pipeline.id == pipeline_id))


async def stored(state: Any, execution_id: str) -> Execution | None:
    async with state.session_factory() as session:
        return await session.get(Execution, execution_id)


def end(journal: TrackingJournal, execution: Any) -> None:
    execution.status, execution.ended_at = t.SUCCEEDED, utcnow()
    execution.outputs = [{"name": "y", "value": 42}]
    journal.ended(execution, [{"execution_id": execution.id, "seq": 0, "timestamp": utcnow(),
                               "stream": "stdout", "message": "done"}], "no-token", utcnow())


def assert_succeeded(row: Execution | None) -> None:
    assert row is not None, "the execution's tracking was dropped"
    assert (row.status, row.outputs, row.pipeline_id, row.pipeline_name) == (
        t.SUCCEEDED, [{"name": "y", "value": 42}], None, "p")


def test_a_running_execution_written_before_its_pipeline_is_deleted(journal_state) -> None:
    """The UPDATE of a row written while it ran."""
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        pipeline_id = await a_pipeline(journal_state, deployment_id)
        running = record(deployment_id, status=t.RUNNING, pipeline_id=pipeline_id)
        journal.changed(running)
        await journal.flush()  # as the barrier of a transaction does
        assert (await stored(journal_state, running.id)) is not None
        await delete_pipeline(journal_state, pipeline_id)
        end(journal, running)
        await journal.flush(everything=False)
        assert_succeeded(await stored(journal_state, running.id))
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_an_ended_execution_first_written_after_its_pipeline_is_deleted(journal_state
                                                                        ) -> None:
    """The INSERT, on the usual batch's path (SQLite: the journal's thread) and on the
    general one (running executions with it), of a pipeline deleted through this process
    and through another one."""
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        warm = record(deployment_id)  # the deployment, then the pipeline, known
        first = await a_pipeline(journal_state, deployment_id)
        journal.changed(record(deployment_id, pipeline_id=first))
        journal.changed(warm)
        await journal.flush(everything=False)

        here = record(deployment_id, status=t.RUNNING, pipeline_id=first)
        await delete_pipeline(journal_state, first)
        end(journal, here)
        await journal.flush(everything=False)
        assert_succeeded(await stored(journal_state, here.id))

        staying = await a_pipeline(journal_state, deployment_id)
        for everything in (False, True):  # True: a running one with it, the general path
            other = await a_pipeline(journal_state, deployment_id)
            journal.changed(record(deployment_id, pipeline_id=other))
            journal.changed(record(deployment_id, pipeline_id=staying))
            await journal.flush(everything=False)  # now known to exist...
            elsewhere = record(deployment_id, status=t.RUNNING, pipeline_id=other)
            alongside = record(deployment_id, status=t.RUNNING)
            journal.changed(alongside)
            kept = record(deployment_id, pipeline_id=staying)
            journal.changed(kept)
            await delete_elsewhere(journal_state, other)  # ...deleted unbeknownst to it
            end(journal, elsewhere)
            await journal.flush(everything=everything)
            assert_succeeded(await stored(journal_state, elsewhere.id))
            row = await stored(journal_state, kept.id)
            assert row is not None and row.pipeline_id == staying  # only the gone one's
        assert (await stored(journal_state, alongside.id)) is not None

        # one never seen and gone, one known to exist, in one batch
        unseen = await a_pipeline(journal_state, deployment_id)
        journal.changed(record(deployment_id, pipeline_id=staying))
        await journal.flush(everything=False)  # known (again: a creation forgets them)
        await delete_elsewhere(journal_state, unseen)
        gone, kept = (record(deployment_id, status=t.RUNNING, pipeline_id=unseen),
                      record(deployment_id, pipeline_id=staying))
        journal.changed(kept)
        end(journal, gone)
        await journal.flush(everything=False)
        assert_succeeded(await stored(journal_state, gone.id))
        row = await stored(journal_state, kept.id)
        assert row is not None and row.pipeline_id == staying
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_a_deployment_deleted_while_its_execution_runs_takes_it_along(journal_state
                                                                      ) -> None:
    """As documented (docs/deployments.md): deleting a deployment deletes its executions,
    also those the journal still holds."""
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        written = record(deployment_id, status=t.RUNNING)
        journal.changed(written)
        await journal.flush()
        held = record(deployment_id, status=t.RUNNING)
        async with journal_state.session_factory() as session, session.begin():
            await session.execute(delete(Execution).where(
                Execution.deployment_id == deployment_id))
            deployment = await session.get(Deployment, deployment_id)
            await session.delete(deployment)
        end(journal, written)
        end(journal, held)
        await journal.flush(everything=False)
        async with journal_state.session_factory() as session:
            left = (await session.scalars(select(Execution.id).where(
                Execution.id.in_([written.id, held.id])))).all()
        assert list(left) == []
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_spool_of_a_killed_process_replays_them_too(journal_state, tmp_path) -> None:
    """replay_spools (a kill -9 between the answer and the batch): the same rows, one
    first written at the replay, one written while it ran."""
    from gristmill_platform.executions.journal import _row, replay_spools, spool_dir
    from gristmill_platform.executions.spool import Spool

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        pipeline_id = await a_pipeline(journal_state, deployment_id)
        written = record(deployment_id, status=t.RUNNING, pipeline_id=pipeline_id)
        journal.changed(written)
        await journal.flush()
        await journal.shutdown()
        fresh = record(deployment_id, status=t.RUNNING, pipeline_id=pipeline_id)
        await delete_pipeline(journal_state, pipeline_id)
        data_dir = tmp_path / "killed"
        spool = Spool(spool_dir(data_dir))
        for execution in (written, fresh):
            execution.status, execution.ended_at = t.SUCCEEDED, utcnow()
            execution.outputs = [{"name": "y", "value": 42}]
            spool.append(_row(execution))
        spool.close()
        for path in spool_dir(data_dir).glob("spool-*.jsonl"):  # its process is gone
            path.rename(path.with_name(f"spool-999999999-1-{path.stem[-1]}.jsonl"))
        assert await replay_spools(journal_state.session_factory, data_dir) == 2
        for execution in (written, fresh):
            assert_succeeded(await stored(journal_state, execution.id))

    asyncio.run(scenario())
