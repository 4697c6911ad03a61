"""How warm calls are tracked (executions/journal.py, the gateway's fast path): in memory,
then in batches, and never missing from what this control service answers."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gristmill_platform.db.models.auth import SdkToken
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import Execution, ExecutionLog
from gristmill_platform.db.types import utcnow
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.journal import TrackingJournal
from gristmill_platform.executions.journal_writes import COLUMNS
from gristmill_platform.executions.records import ExecutionRecord
from tests.conftest import GristmillEnv, start_environment
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import make_pipeline

STEP_CODE = '''
from gristmill import Gristmill


def echo(text: str) -> dict:
    print(f"echo {text}")
    return {"text": text}


def measured(text: str) -> dict:
    # the execution token given to this execution, used from inside the step
    Gristmill().record_metric_value("length", len(text))
    return {"text": text}
'''
TEXT = [{"name": "text", "data_type": "string"}]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("tracking"),
                                   {"src/steps.py": STEP_CODE}))


def deploy(api: httpx.Client, archive: bytes, name: str, function: str) -> str:
    make_pipeline(api, archive, name, function, TEXT, TEXT)
    created = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                           "mode": "low_latency"})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "up", created.json()
    return str(created.json()["endpoint_token"])


def call(env: GristmillEnv, name: str, token: str, text: str) -> dict[str, Any]:
    response = httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, timeout=60,
                          headers={"Authorization": f"EndpointToken {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_answered_call_is_in_the_history_at_once(gristmill_env, api, archive,
                                                     unique) -> None:
    name = f"tr-now-{unique}"
    token = deploy(api, archive, name, "echo")
    answer = call(gristmill_env, name, token, "hello")
    execution_id = answer["execution_id"]
    # no wait: the read's transaction writes what the journal holds first
    execution = api.get(f"/executions/{execution_id}")
    assert execution.status_code == 200, execution.text
    body = execution.json()
    assert body["status"] == "Succeeded" and body["deployment_name"] == name
    assert body["worker"] == f"local-{name}-1"
    assert [i["value"] for i in body["inputs"]] == ["hello"]
    assert [o["value"] for o in body["outputs"]] == ["hello"]
    logs = api.post(f"/executions/{execution_id}/logs", json={}).json()
    assert "echo hello" in [line["message"] for batch in logs for line in batch]


def test_the_step_can_use_its_execution_token(gristmill_env, api, archive, unique) -> None:
    name = f"tr-token-{unique}"
    token = deploy(api, archive, name, "measured")
    execution_id = call(gristmill_env, name, token, "four")["execution_id"]
    metrics = api.get("/metrics/single-value",
                      params={"filters[execution_id]": execution_id})
    assert metrics.status_code == 200, metrics.text
    found = [(m["name"], m["value"]) for m in metrics.json()["metrics"]]
    assert found == [("length", 4)], metrics.json()


def test_deleting_a_deployment_leaves_no_execution_behind(gristmill_env, api, archive,
                                                          unique) -> None:
    name = f"tr-del-{unique}"
    token = deploy(api, archive, name, "echo")
    ids = [call(gristmill_env, name, token, str(i))["execution_id"] for i in range(5)]
    assert api.delete(f"/deployments/{name}").status_code == 200
    for execution_id in ids:
        assert api.get(f"/executions/{execution_id}").status_code == 404
    listed = api.get(f"/pipelines/{name}/executions").json()
    assert listed == []


@pytest.fixture
def own_environment(database, tmp_path: Path) -> Iterator[tuple[Any, GristmillEnv]]:
    server, env, _ = start_environment(tmp_path / "env", database.url)
    try:
        yield server, env
    finally:
        server.stop()


def test_a_normal_stop_writes_every_answered_call(own_environment, archive, tmp_path,
                                                  database) -> None:
    server, env = own_environment
    with env.client() as api:
        token = deploy(api, archive, "tr-stop", "echo")
    ids = [call(env, "tr-stop", token, str(i))["execution_id"] for i in range(20)]
    server.stop()
    server2, env2, _ = start_environment(tmp_path / "env", database.url)
    try:
        with env2.client() as api:
            listed = {e["execution_id"] for e in api.get("/pipelines/tr-stop/executions")
                      .json()}
        assert set(ids) <= listed
    finally:
        server2.stop()


# --- the journal on its own --------------------------------------------------------------


def _state_on(database_url: str, tmp_path: Path) -> Iterator[Any]:
    from gristmill_platform.app import build_state
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    settings = resolve_settings(Settings(data_dir=tmp_path / "env",
                                         database_url=database_url))
    prepare_environment(settings)
    state = build_state(settings)
    yield state
    asyncio.run(state.engine.dispose())


@pytest.fixture
def journal_state(database, tmp_path: Path) -> Iterator[Any]:
    yield from _state_on(database.url, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_journal_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """journal_state on a database of the test's own: for a test that reconciles, which
    looks at every active execution, and would also fail those that earlier tests left in
    the shared database once they are quiet (45 s: how long the suite ran before it
    decided, on a slower machine)."""
    from tests.conftest import own_database

    folder = tmp_path / "db"
    folder.mkdir()
    with own_database(request.param, folder) as database:
        yield from _state_on(database.url, tmp_path)


def journal_of(state: Any) -> TrackingJournal:
    return TrackingJournal(state.engine, state.settings.database_url, state.traffic,
                           state.settings.data_dir / "journal")


def record(deployment_id: str, status: str = t.SUCCEEDED, pipeline_id: str | None = None,
           **values: Any) -> ExecutionRecord:
    now = utcnow()
    key = values.pop("id", f"p-{uuid.uuid4().hex}")
    return ExecutionRecord(
        id=key, pipeline_id=pipeline_id, pipeline_name="p", step_id=None, step_name="s",
        deployment_id=deployment_id, deployment_name="d",
        execution_rule="endpoint", status=status, inputs=[], outputs=[], created_by=None,
        created_at=now, **values)


def token_row(execution: ExecutionRecord, user_id: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:16], "user_id": user_id, "name": "t",
            "secret_hash": "0" * 64, "scope": "execution", "execution_id": execution.id,
            "created_at": utcnow(), "expires_at": None, "revoked_at": None,
            "last_used_at": None}


async def seed(state: Any) -> tuple[str, str]:
    """A deployment row and the admin user's id."""
    from gristmill_platform.db.models.auth import User
    from gristmill_platform.db.models.steps import Pipeline, Step

    async with state.session_factory() as session, session.begin():
        user = (await session.scalars(select(User))).first()
        assert user is not None
        suffix = uuid.uuid4().hex[:8]
        step = Step(id=str(uuid.uuid4()), name=f"s-{suffix}", function_path="a.py",
                    function_name="f", origin="local")
        pipeline = Pipeline(id=str(uuid.uuid4()), name=f"p-{suffix}", step_id=step.id)
        session.add(step)
        await session.flush()  # no relationship orders them: the step first
        session.add(pipeline)
        await session.flush()
        deployment = Deployment(
            id=str(uuid.uuid4()), name=f"d-{suffix}", pipeline_id=pipeline.id,
            pipeline_name="p", execution_rule="endpoint", mode="low_latency",
            inputs_mapping=[], outputs_mapping=[], created_by=user.id)
        session.add(deployment)
    return deployment.id, user.id


def test_tokens_are_written_only_for_running_executions(journal_state) -> None:
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        ended = record(deployment_id)
        running = record(deployment_id, status=t.RUNNING)
        journal.created(ended, token_row(ended, user_id))
        running_token = token_row(running, user_id)
        journal.created(running, running_token)
        journal.ended(ended, [{"execution_id": ended.id, "seq": 0, "timestamp": utcnow(),
                               "stream": "stdout", "message": "hi"}], "unused", utcnow())
        await journal.flush()
        async with journal_state.session_factory() as session:
            mine = [ended.id, running.id]
            tokens = (await session.scalars(select(SdkToken.execution_id).where(
                SdkToken.execution_id.in_(mine)))).all()
            assert list(tokens) == [running.id]  # an ended one has no use for its token
            logs = (await session.scalars(select(ExecutionLog.message).where(
                ExecutionLog.execution_id.in_(mine)))).all()
            assert list(logs) == ["hi"]
        # it ends: its row is updated, its token revoked
        running.status, running.ended_at = t.SUCCEEDED, utcnow() + timedelta(seconds=1)
        journal.ended(running, [], running_token["id"], utcnow())
        await journal.flush()
        async with journal_state.session_factory() as session:
            row = await session.get(Execution, running.id)
            assert row is not None and row.status == t.SUCCEEDED
            token = await session.get(SdkToken, running_token["id"])
            assert token is not None and token.revoked_at is not None
        await journal.shutdown()

    asyncio.run(scenario())


async def refused(state: Any, deployment_id: str) -> ExecutionRecord:
    """An execution the database refuses to insert: its id is already taken (by a row
    that ended otherwise, which stays). (A pipeline deleted meanwhile no longer makes a
    row refused: tests/platform/test_journal_pipeline_deleted.py.)"""
    taken = record(deployment_id, status=t.FAILED)
    async with state.session_factory() as session, session.begin():
        session.add(Execution(**{c: getattr(taken, c) for c in COLUMNS}))
    return record(deployment_id, id=taken.id)


def test_a_bad_row_does_not_take_the_batch_with_it(journal_state) -> None:
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        good = record(deployment_id)
        bad = await refused(journal_state, deployment_id)
        gone = record(str(uuid.uuid4()))  # its deployment was deleted meanwhile
        for execution in (good, bad, gone):
            journal.changed(execution)
        await journal.flush()
        async with journal_state.session_factory() as session:
            rows = {row.id: row.status for row in (await session.scalars(select(
                Execution).where(Execution.id.in_([good.id, bad.id, gone.id])))).all()}
        assert rows == {good.id: t.SUCCEEDED, bad.id: t.FAILED}  # bad: the one already there
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_ended_calls_of_unchecked_deployments_are_inserted_off_the_loop(
        journal_state, monkeypatch) -> None:
    """The usual batch whose deployments have not been seen lately (every few seconds,
    another process may have deleted one) is still written by the journal's thread:
    the rows of a deployment that is gone are dropped there, with their logs, and
    nothing goes through the general path, which runs on the event loop."""
    from gristmill_platform.executions import journal_writes

    if not journal_state.settings.database_url.startswith("sqlite"):
        pytest.skip("the insert thread is SQLite's")
    general: list[int] = []
    real_write_batch = journal_writes.write_batch

    def counted(connection: Any, batch: Any) -> Any:
        general.append(len(batch.rows))
        return real_write_batch(connection, batch)

    monkeypatch.setattr(journal_writes, "write_batch", counted)

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        good = record(deployment_id)
        gone = record(str(uuid.uuid4()))  # its deployment was deleted meanwhile
        for execution in (good, gone):
            journal.created(execution, token_row(execution, user_id))
            journal.ended(execution, [{"execution_id": execution.id, "seq": 0,
                                       "timestamp": utcnow(), "stream": "stdout",
                                       "message": f"from {execution.id}"}],
                          "unused", utcnow())
        await journal.flush(everything=False)  # the periodic batch
        assert general == []
        assert await stored(journal_state, good.id, gone.id) == {good.id}
        async with journal_state.session_factory() as session:
            logs = (await session.scalars(select(ExecutionLog.message).where(
                ExecutionLog.execution_id.in_([good.id, gone.id])))).all()
        assert list(logs) == [f"from {good.id}"]
        assert not journal.pending
        # the deployment is known now: the next batch does not look for it again
        again = record(deployment_id)
        journal.created(again, token_row(again, user_id))
        journal.ended(again, [], "unused", utcnow())
        await journal.flush(everything=False)
        assert general == [] and await stored(journal_state, again.id) == {again.id}
        await journal.shutdown()

    asyncio.run(scenario())


def test_a_batch_gives_the_loop_a_turn_between_slices(journal_state, monkeypatch) -> None:
    """With no call in flight, the batch's conversion still lets the event loop poll
    between two slices: a call that came meanwhile is read (and counted in flight) before
    the next slice rather than after the whole batch."""
    from gristmill_platform.executions import journal_writes

    if not journal_state.settings.database_url.startswith("sqlite"):
        pytest.skip("the insert thread is SQLite's")
    turns: list[bool] = []  # per slice: did the loop run what came since the last one
    arrived: list[asyncio.Event] = []
    real_rows = journal_writes._Insert.rows

    def rows(self: Any, values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        if values and "deployment_name" in values[0]:  # the executions, not their logs
            turns.append(bool(arrived) and arrived[-1].is_set())
            arrived.append(asyncio.Event())
            asyncio.get_running_loop().call_soon(arrived[-1].set)  # as a call's data
        return real_rows(self, values)

    monkeypatch.setattr(journal_writes._Insert, "rows", rows)

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        for _ in range(journal_writes.CONVERT_SLICE * 3):
            execution = record(deployment_id)
            journal.created(execution, token_row(execution, user_id))
            journal.ended(execution, [], "unused", utcnow())
        await journal.flush(everything=False)
        assert len(turns) == 3 and turns[1:] == [True, True]
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_periodic_batch_copies_its_rows_a_slice_at_a_time(journal_state,
                                                              monkeypatch) -> None:
    """The loop runs between two slices of the periodic batch's copy; what is recorded
    meanwhile is written then or in the next batch, nothing lost."""
    from gristmill_platform.executions import journal as journal_module

    flushing: list[bool] = []
    copied: list[bool] = []  # per copied row: did the loop run since the batch began
    arrived: list[asyncio.Event] = []
    real_row = journal_module._row

    def row(execution: ExecutionRecord) -> dict[str, Any]:
        if not flushing:  # the spool's copy, as a call ends
            return real_row(execution)
        if not arrived:
            arrived.append(asyncio.Event())
            asyncio.get_running_loop().call_soon(arrived[0].set)  # as a call's data
        copied.append(arrived[0].is_set())
        return real_row(execution)

    monkeypatch.setattr(journal_module, "_row", row)

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        first = [record(deployment_id) for _ in range(journal_module.COPY_SLICE * 2)]
        later: list[ExecutionRecord] = []
        real_pause = journal._between_slices

        async def pause() -> None:
            await real_pause()
            if not later:  # a call ends while the batch is being copied
                later.append(record(deployment_id))
                journal.created(later[0], token_row(later[0], user_id))
                journal.ended(later[0], [], "unused", utcnow())

        monkeypatch.setattr(journal, "_between_slices", pause)
        for execution in first:
            journal.created(execution, token_row(execution, user_id))
            journal.ended(execution, [], "unused", utcnow())
        flushing.append(True)
        await journal.flush(everything=False)
        slice_size = journal_module.COPY_SLICE
        assert copied[:slice_size] == [False] * slice_size
        assert copied[slice_size] is True
        ids = [e.id for e in first + later]
        assert await stored(journal_state, *[e.id for e in first]) == {e.id for e in first}
        await journal.flush(everything=False)
        assert await stored(journal_state, *ids) == set(ids)
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_heartbeat_does_not_wait_for_the_journal(journal_state) -> None:
    """The heartbeat of held executions (every HEARTBEAT_S) updates the rows the database
    has without writing what the journal holds first (on the event loop)."""
    from gristmill_platform.executions.low_latency import LowLatencyDispatcher

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        running = record(deployment_id, status=t.RUNNING)
        running.heartbeat_at = utcnow() - timedelta(minutes=5)
        journal.created(running, token_row(running, user_id))
        await journal.flush()
        fresh = record(deployment_id, status=t.RUNNING)
        journal.created(fresh, token_row(fresh, user_id))  # pending in the journal
        barriers: list[int] = []

        async def barrier() -> None:
            barriers.append(1)

        journal_state.transactions.barrier = barrier
        # only what _beat uses of a dispatcher
        dispatcher = object.__new__(LowLatencyDispatcher)
        dispatcher.transactions = journal_state.transactions
        before = utcnow()
        await dispatcher._beat([running.id, fresh.id])
        assert barriers == []
        async with journal_state.session_factory() as session:
            row = await session.get(Execution, running.id)
            assert row is not None and row.heartbeat_at is not None
            assert row.heartbeat_at >= before - timedelta(seconds=1)
        assert journal.pending  # still the journal's to write
        await journal.shutdown()

    asyncio.run(scenario())


def test_an_execution_ended_elsewhere_is_not_overwritten(journal_state) -> None:
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        running = record(deployment_id, status=t.RUNNING)
        journal.changed(running)
        await journal.flush()
        async with journal_state.session_factory() as session, session.begin():
            row = await session.get(Execution, running.id)
            assert row is not None
            row.status, row.status_reason = t.CANCELLED, "cancelled by hand"
        running.status = t.SUCCEEDED
        journal.changed(running)
        await journal.flush()
        async with journal_state.session_factory() as session:
            row = await session.get(Execution, running.id)
            assert row is not None and row.status == t.CANCELLED
        await journal.shutdown()

    asyncio.run(scenario())


async def stored(state: Any, *ids: str) -> set[str]:
    async with state.session_factory() as session:
        return set((await session.scalars(select(Execution.id).where(
            Execution.id.in_(ids)))).all())


def test_a_batch_holds_ended_executions_and_long_running_ones(journal_state,
                                                              monkeypatch) -> None:
    from gristmill_platform.executions import journal as journal_module

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, user_id = await seed(journal_state)
        ended = record(deployment_id)
        short = record(deployment_id, status=t.RUNNING)
        long = record(deployment_id, status=t.RUNNING)
        long.created_at = utcnow() - timedelta(seconds=5)
        for execution in (ended, short, long):
            journal.created(execution, token_row(execution, user_id))
        await journal.flush(everything=False)  # the periodic batch
        assert await stored(journal_state, ended.id, short.id, long.id) == {ended.id, long.id}
        assert journal.pending  # the short one waits in memory
        monkeypatch.setattr(journal_module, "RUNNING_VISIBLE_AFTER_S", 0.0)
        await journal.flush(everything=False)  # now it has run long enough
        assert await stored(journal_state, short.id) == {short.id}
        await journal.shutdown()

    asyncio.run(scenario())


async def holding_a_running_one(state: Any
                                 ) -> tuple[TrackingJournal, ExecutionRecord, dict[str, Any]]:
    """A journal holding one running execution (of a deployment of its own) and its
    execution token's row."""
    journal = journal_of(state)
    deployment_id, user_id = await seed(state)
    running = record(deployment_id, status=t.RUNNING)
    token = token_row(running, user_id)
    journal.created(running, token)
    return journal, running, token


def test_the_barrier_writes_running_executions_and_their_tokens(journal_state) -> None:
    async def scenario() -> None:
        journal, running, token = await holding_a_running_one(journal_state)
        await journal.barrier()
        assert await stored(journal_state, running.id) == {running.id}
        async with journal_state.session_factory() as session:
            assert await session.get(SdkToken, token["id"]) is not None
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_journal_holds_a_token_until_its_batch_is_written(journal_state,
                                                              monkeypatch) -> None:
    """holds_token, what lets a request's token check skip the barrier
    (Transactions.read): true from an execution token's creation until the batch
    holding its row is in the database, then again while its revocation is pending."""
    async def scenario() -> None:
        journal, running, token = await holding_a_running_one(journal_state)
        assert journal.holds_token(token["id"]) and not journal.holds_token("another")
        during: list[bool] = []
        write = journal._write

        async def watched(*args: Any, **kwargs: Any) -> None:
            during.append(journal.holds_token(token["id"]))
            await write(*args, **kwargs)

        monkeypatch.setattr(journal, "_write", watched)
        await journal.barrier()
        assert during == [True]  # taken out of what is pending, not written yet
        assert not journal.holds_token(token["id"])  # the database has it
        running.status, running.ended_at = t.SUCCEEDED, utcnow()
        journal.ended(running, [], token["id"], utcnow())
        assert journal.holds_token(token["id"])  # its revocation is pending
        await journal.barrier()
        assert during == [True, True] and not journal.holds_token(token["id"])
        async with journal_state.session_factory() as session:
            stored_token = await session.get(SdkToken, token["id"])
            assert stored_token is not None and stored_token.revoked_at is not None
        await journal.shutdown()

    asyncio.run(scenario())


def test_a_batch_waits_for_a_locked_sqlite_database(journal_state, database) -> None:
    """The direct SQLite connection never waits for the lock on the event loop: the batch
    goes through the async driver, which waits for it."""
    if database.kind != "sqlite":
        pytest.skip("the direct connection is SQLite's")
    import sqlite3

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        ended = record(deployment_id)
        journal.changed(ended)
        holder = sqlite3.connect(database.url.removeprefix("sqlite:///"),
                                 isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        flushing = asyncio.get_running_loop().create_task(journal.flush())
        await asyncio.sleep(0.3)
        assert not flushing.done()  # waiting, and the loop still runs
        holder.execute("COMMIT")
        holder.close()
        await asyncio.wait_for(flushing, 20)
        assert await stored(journal_state, ended.id) == {ended.id}
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_directory_sees_another_process_change_within_its_ttl(journal_state,
                                                                   monkeypatch) -> None:
    """Under steady traffic an entry is reloaded in the background, ahead of its expiry;
    a change made by another process (no change event here) still shows within TTL_S."""
    from sqlalchemy import update

    from gristmill_platform.deployments import directory

    monkeypatch.setattr(directory, "TTL_S", 1.0)

    async def scenario() -> None:
        deployment_id, _ = await seed(journal_state)
        async with journal_state.session_factory() as session:
            name = (await session.scalars(select(Deployment.name).where(
                Deployment.id == deployment_id))).one()
        endpoints = directory.EndpointDirectory(journal_state.session_factory,
                                                journal_state.traffic)
        first = await endpoints.lookup(name)
        assert first is not None and first.deployment.is_enabled
        async with journal_state.engine.begin() as connection:  # "another process"
            await connection.execute(update(Deployment).where(Deployment.id == deployment_id)
                                     .values(is_enabled=False))
        assert await endpoints.lookup(name) is first  # fresh: no query
        deadline = asyncio.get_running_loop().time() + 1.0
        while (entry := await endpoints.lookup(name)) is first:
            await asyncio.sleep(0.01)
        # reloaded in the background, before the entry expired
        assert asyncio.get_running_loop().time() < deadline
        assert entry is not None and not entry.deployment.is_enabled

    asyncio.run(scenario())


def full_record(deployment_id: str) -> ExecutionRecord:
    now = utcnow()
    execution = record(deployment_id, status=t.SUCCEEDED, worker="local-w-1",
                       handle={"backend": "low-latency", "pod_id": "local-w-1"},
                       started_at=now, ended_at=now + timedelta(milliseconds=3),
                       heartbeat_at=now, status_reason=None)
    execution.inputs = [{"pipeline_input_name": "text", "data_type": "string",
                         "mapping_type": "endpoint", "value": "héllo ✓"}]
    execution.outputs = [{"pipeline_output_name": "n", "data_type": "number",
                          "mapping_type": "endpoint", "value": 1.5}]
    return execution


def test_sqlite_inserts_store_what_sqlalchemy_stores(journal_state, database) -> None:
    """The usual batch on SQLite is inserted by the journal's own thread from rows
    converted here: the stored values must be those of the general path."""
    if database.kind != "sqlite":
        pytest.skip("SQLite's own insert path")
    import sqlite3

    from gristmill_platform.executions.journal import COLUMNS
    from gristmill_platform.executions.journal_writes import (
        Batch,
        BatchWriter,
        only_inserts,
        write_batch,
    )

    async def scenario() -> None:
        deployment_id, _ = await seed(journal_state)
        fast, general = full_record(deployment_id), full_record(deployment_id)
        for moment in ("created_at", "started_at", "ended_at", "heartbeat_at"):
            setattr(general, moment, getattr(fast, moment))
        line = {"seq": 0, "timestamp": utcnow(), "stream": "stdout", "message": "hi ✓"}

        def batch(execution: ExecutionRecord) -> Batch:
            return Batch(rows=[{c: getattr(execution, c) for c in COLUMNS}],
                         logs=[{**line, "execution_id": execution.id}], tokens=[],
                         revoked={"token": utcnow()}, written_before=set(), token_owner={},
                         known_deployments={deployment_id})

        assert only_inserts(batch(fast))
        writer = BatchWriter(journal_state.engine, database.url)
        assert writer._inserts is not None
        await writer._inserts.write(batch(fast))
        async with journal_state.engine.begin() as connection:
            await connection.run_sync(write_batch, batch(general))
        writer.close()
        raw = sqlite3.connect(database.url.removeprefix("sqlite:///"))
        rows = {r[0]: r[1:] for r in raw.execute(
            f"SELECT id, {', '.join(c for c in COLUMNS if c != 'id')} FROM executions "
            "WHERE id IN (?, ?)", (fast.id, general.id))}
        logs = {r[0]: r[1:] for r in raw.execute(
            "SELECT execution_id, seq, timestamp, stream, message FROM execution_logs "
            "WHERE execution_id IN (?, ?)", (fast.id, general.id))}
        raw.close()
        assert rows[fast.id] == rows[general.id]
        assert logs[fast.id] == logs[general.id]

    asyncio.run(scenario())


def sqlite_inserts(journal_state: Any, database: Any, pause: Any) -> Any:
    """The journal's SQLite insert path on the test's database (SQLite only)."""
    if database.kind != "sqlite":
        pytest.skip("SQLite's own insert path")
    from gristmill_platform.executions.journal_writes import SqliteInserts

    return SqliteInserts(database.url.removeprefix("sqlite:///"),
                         journal_state.engine.dialect, pause)


def inserts_batch(executions: list[ExecutionRecord], deployment_id: str) -> Any:
    """A batch of ended executions only (what SqliteInserts writes), no logs."""
    from gristmill_platform.executions.journal import COLUMNS
    from gristmill_platform.executions.journal_writes import Batch

    return Batch(rows=[{c: getattr(e, c) for c in COLUMNS} for e in executions], logs=[],
                 tokens=[], revoked={}, written_before=set(), token_owner={},
                 known_deployments={deployment_id})


def test_sqlite_inserts_convert_and_insert_a_slice_at_a_time(journal_state, database
                                                            ) -> None:
    """Between two slices of a batch's conversion, and before each slice its thread
    inserts, the event loop is given back (the journal's pause waits for a moment with no
    call in flight)."""
    from gristmill_platform.executions.journal_writes import CONVERT_SLICE, INSERT_SLICE

    pauses: list[int] = []

    async def pause() -> bool:
        pauses.append(len(pauses))
        await asyncio.sleep(0)
        return True

    inserts = sqlite_inserts(journal_state, database, pause)

    async def scenario() -> None:
        deployment_id, _ = await seed(journal_state)
        count = 2 * max(CONVERT_SLICE, INSERT_SLICE) + 1
        executions = [full_record(deployment_id) for _ in range(count)]
        await inserts.write(inserts_batch(executions, deployment_id))
        inserts.close()
        # between the slices converted, then before each slice inserted
        assert len(pauses) == (-(-count // CONVERT_SLICE) - 1) + -(-count // INSERT_SLICE)
        assert await stored(journal_state, *[e.id for e in executions]) == {
            e.id for e in executions}

    asyncio.run(scenario())


def test_a_request_waiting_for_the_batch_gets_the_rest_at_once(journal_state, database
                                                               ) -> None:
    """Once the pause says a request waits for the batch (False), the batch stops
    pausing: the rest is converted and inserted in one piece."""
    from gristmill_platform.executions.journal_writes import CONVERT_SLICE, INSERT_SLICE

    answers = iter([True, False])  # the second pause: a request came
    pauses: list[bool] = []

    async def pause() -> bool:
        pauses.append(next(answers))
        return pauses[-1]

    inserts = sqlite_inserts(journal_state, database, pause)

    async def scenario() -> None:
        deployment_id, _ = await seed(journal_state)
        executions = [full_record(deployment_id)
                      for _ in range(3 * max(CONVERT_SLICE, INSERT_SLICE))]
        await inserts.write(inserts_batch(executions, deployment_id))
        inserts.close()
        assert pauses == [True, False]  # none after it, though slices were left
        assert await stored(journal_state, *[e.id for e in executions]) == {
            e.id for e in executions}

    asyncio.run(scenario())


def test_a_barrier_makes_the_batch_being_written_stop_pausing(journal_state, monkeypatch
                                                             ) -> None:
    """A periodic batch waits for quiet moments between its slices; a request's barrier
    arriving meanwhile makes it write the rest without waiting again, then writes what
    is left, and returns with everything in the database."""
    from gristmill_platform.executions.journal import COPY_SLICE

    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        ended = [record(deployment_id) for _ in range(4 * COPY_SLICE)]
        for execution in ended:
            journal.changed(execution)
        waits: list[str] = []
        first_wait = asyncio.Event()

        async def quiet(max_wait_s: float) -> None:  # a call always in flight
            waits.append("wait")
            first_wait.set()
            await asyncio.sleep(max_wait_s)

        monkeypatch.setattr(journal.traffic, "quiet", quiet)
        periodic = asyncio.create_task(journal.flush(everything=False))
        await first_wait.wait()
        late = record(deployment_id)
        journal.changed(late)
        waits.append("barrier")
        await journal.barrier()
        await periodic
        assert waits[-1] == "barrier" and waits.count("barrier") == 1
        assert await stored(journal_state, *[e.id for e in (*ended, late)]) == {
            e.id for e in (*ended, late)}
        await journal.shutdown()

    asyncio.run(scenario())


def test_a_batch_inserted_in_slices_is_one_transaction(journal_state, database) -> None:
    """A row refused in the last slice takes the slices inserted before it back with it
    (the journal then finds the bad row through the general path), and a batch cancelled
    between two slices leaves nothing behind; the next batch is written whole."""
    from gristmill_platform.executions.journal_writes import CONVERT_SLICE, INSERT_SLICE

    pauses = 0
    cancel_at: int | None = None

    async def pause() -> bool:
        nonlocal pauses
        pauses += 1
        if pauses == cancel_at:
            raise asyncio.CancelledError
        await asyncio.sleep(0)
        return True

    inserts = sqlite_inserts(journal_state, database, pause)

    async def scenario() -> None:
        nonlocal pauses, cancel_at
        deployment_id, _ = await seed(journal_state)
        taken = await refused(journal_state, deployment_id)
        good = [full_record(deployment_id) for _ in range(2 * INSERT_SLICE)]

        def batch(executions: list[ExecutionRecord]) -> Any:
            return inserts_batch(executions, deployment_id)

        with pytest.raises(sqlite3.IntegrityError):
            await inserts.write(batch([*good, taken]))  # the last slice is refused
        assert await stored(journal_state, *[e.id for e in good]) == set()
        # cancelled before the second insert slice: the pauses are those between the
        # conversion slices, then one before each insert slice
        pauses, cancel_at = 0, -(-len(good) // CONVERT_SLICE) - 1 + 2
        with pytest.raises(asyncio.CancelledError):
            await inserts.write(batch(good))
        assert await stored(journal_state, *[e.id for e in good]) == set()
        cancel_at = None
        await inserts.write(batch(good))
        inserts.close()
        assert await stored(journal_state, *[e.id for e in good]) == {e.id for e in good}

    asyncio.run(scenario())


def test_a_refused_insert_falls_back_and_keeps_the_others(journal_state, database) -> None:
    async def scenario() -> None:
        journal = journal_of(journal_state)
        deployment_id, _ = await seed(journal_state)
        first = record(deployment_id)
        journal.changed(first)
        await journal.flush(everything=False)  # the deployment is now known
        good = record(deployment_id)
        bad = await refused(journal_state, deployment_id)
        journal.changed(good)
        journal.changed(bad)
        await journal.flush(everything=False)
        assert await stored(journal_state, first.id, good.id, bad.id) == {
            first.id, good.id, bad.id}  # bad: the row already there, which stays
        async with journal_state.session_factory() as session:
            row = await session.get(Execution, bad.id)
            assert row is not None and row.status == t.FAILED
        assert not journal.pending
        await journal.shutdown()

    asyncio.run(scenario())


def test_the_fast_path_takes_the_token_from_the_query(gristmill_env, api, archive,
                                                     unique) -> None:
    name = f"tr-query-{unique}"
    token = deploy(api, archive, name, "echo")
    response = httpx.post(f"{gristmill_env.url}/endpoints/{name}", params={"token": token},
                          json={"text": "q"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"text": "q"}


def test_an_unexpected_error_on_the_fast_path_is_a_500_with_its_request_id(
        gristmill_env, api, archive, unique, monkeypatch) -> None:
    from gristmill_platform.deployments import gateway

    name = f"tr-boom-{unique}"
    token = deploy(api, archive, name, "echo")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(gateway, "run_fast", broken)
    response = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "x"},
                          headers={"Authorization": f"EndpointToken {token}"}, timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["name"] == "InternalServerError" and "boom" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


def test_the_fast_path_refuses_as_the_routes_do(gristmill_env, api, archive, unique) -> None:
    name = f"tr-bad-{unique}"
    token = deploy(api, archive, name, "echo")
    url = f"{gristmill_env.url}/endpoints/{name}"
    good = {"Authorization": f"EndpointToken {token}"}
    cases = [
        ({}, {"text": "x"}, 401, "MissingEndpointToken"),
        ({"Authorization": "EndpointToken nope"}, {"text": "x"}, 401, "InvalidEndpointToken"),
        (good, {"text": "x", "extra": 1}, 400, "InvalidInputs"),
        (good, {"text": 3}, 400, None),
        (good, [1, 2], 400, "BadRequest"),
    ]
    for headers, body, status, error in cases:
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        assert response.status_code == status, (body, response.text)
        payload = response.json()
        assert payload["request_id"] == response.headers["x-request-id"]
        if error is not None:
            assert payload["name"] == error, payload
    broken = httpx.post(url, content=b"{not json", timeout=30,
                        headers={**good, "Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["message"]
    assert api.patch(f"/deployments/{name}", json={"is_enabled": False,
                                                   "reload": False}).status_code == 200
    disabled = httpx.post(url, json={"text": "x"}, headers=good, timeout=30)
    assert disabled.status_code == 403 and disabled.json()["name"] == "DeploymentDisabled"
    # none of them made an execution
    assert api.get(f"/pipelines/{name}/executions").json() == []


def test_a_quiet_warm_worker_execution_is_failed_by_the_reconciler(fresh_journal_state
                                                                    ) -> None:
    journal_state = fresh_journal_state
    from gristmill_platform.app import build_services
    from gristmill_platform.executions.low_latency import worker_handle

    async def scenario() -> None:
        journal_state.started = build_services(journal_state,
                                               journal_state.settings.data_dir / "runtime")
        runtime = journal_state.services.executions
        deployment_id, _ = await seed(journal_state)
        journal = runtime.low_latency.journal
        # held by a control service that stopped: no heartbeat for minutes
        quiet = record(deployment_id, status=t.RUNNING,
                       heartbeat_at=utcnow() - timedelta(minutes=5))
        quiet.handle = worker_handle("local-d-1", quiet.id)
        async with journal_state.session_factory() as session, session.begin():
            session.add(Execution(**{c: getattr(quiet, c) for c in COLUMNS}))
        alive = record(deployment_id, status=t.RUNNING, heartbeat_at=utcnow())
        alive.handle = worker_handle("local-d-1", alive.id)
        # running here, its row written while it ran, now as quiet in the database as the
        # stopped one's: this journal holds it, so it is alive
        here = record(deployment_id, status=t.RUNNING,
                      heartbeat_at=utcnow() - timedelta(minutes=5))
        here.handle = worker_handle("local-d-1", here.id)
        for execution in (alive, here):
            journal.changed(execution)
        await journal.flush()
        assert journal.holds(here.id) and not journal.holds(quiet.id)
        barriers: list[int] = []
        real_barrier = runtime.transactions.barrier

        async def barrier() -> None:
            barriers.append(1)
            if real_barrier is not None:
                await real_barrier()

        runtime.transactions.barrier = barrier
        await runtime.reconcile()
        # the quiet one is failed in a transaction of its own, which passes the barrier
        assert barriers == [1]
        async with journal_state.session_factory() as session:
            failed = await session.get(Execution, quiet.id)
            held = await session.get(Execution, alive.id)
            running_here = await session.get(Execution, here.id)
        assert failed is not None and failed.status == t.FAILED
        assert "warm worker stopped" in (failed.status_reason or "")
        assert held is not None and held.status == t.RUNNING
        assert running_here is not None and running_here.status == t.RUNNING
        await journal.shutdown()

    asyncio.run(scenario())
