"""A local elastic worker is forked within the transaction that records its start and its
handle (executions/runtime.py, _launch_local). What that must not break:

- a cancel committed while the worker is being forked wins: the execution stays
  cancelled and its worker is stopped (on SQLite, where the launch's read takes no lock,
  by the launch's compare-and-set; on PostgreSQL, the cancel waits for the row's lock and
  then stops the worker it finds recorded);
- a worker that reaches its finish before the launch's transaction has ended waits for it:
  the execution ends with its start, its worker and its outputs written.

Each test wraps the executor's submit of its own environment, in the server's event loop,
to land an event at that moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import GristmillEnv, own_database, start_environment
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import make_pipeline, run, wait

STEP = '''
import time


def echo(text: str) -> dict:
    return {"text": text}


def slow(text: str) -> dict:
    time.sleep(60)
    return {"text": text}
'''
TEXT = [{"name": "text", "data_type": "string"}]


@pytest.fixture(params=["sqlite", "postgres"])
def environment(request: pytest.FixtureRequest, tmp_path: Path
                ) -> Iterator[tuple[Any, GristmillEnv, str]]:
    """An environment of the test's own (its submit is wrapped), on a database of its own
    (the shared one's admin may not be its first user after other tests); the database's
    kind comes third."""
    folder = tmp_path / "db"
    folder.mkdir()
    with own_database(request.param, folder) as database:
        server, env, _ = start_environment(tmp_path / "env", database.url)
        try:
            with env.client() as api:
                archive = archive_of(write_folder(tmp_path / "step", {"src/steps.py": STEP}))
                make_pipeline(api, archive, "echo", "echo", TEXT, TEXT)
                make_pipeline(api, archive, "slow", "slow", TEXT, TEXT)
            yield server, env, database.kind
        finally:
            server.stop()


def _runtime(server: Any) -> Any:
    return server.server.config.app.state.gristmill.started.executions


def _wrap_submit(server: Any, after_fork: Any) -> list[dict[str, Any]]:
    """Call ``after_fork(handle)`` in the launch, between the fork and the write of its
    start; returns the handles submitted."""
    executor = _runtime(server).executor
    original = executor.submit
    handles: list[dict[str, Any]] = []

    async def submit(spec: Any, start_answer: Any = None, recorded: Any = None) -> Any:
        handle = await original(spec, start_answer, recorded=recorded)
        handles.append(handle)
        await after_fork(handle)
        return handle

    executor.submit = submit
    return handles


def _run_to_end(env: GristmillEnv, pipeline: str, text: str
                ) -> tuple[httpx.Response, dict[str, Any]]:
    """Run, wait for the end; the outputs' answer and the execution."""
    with env.client() as api:
        started = run(api, pipeline, {"text": text})
        assert started.status_code == 201, started.text
        execution_id = started.json()["execution_id"]
        ended = wait(api, execution_id)
        return ended, api.get(f"/executions/{execution_id}").json()


def _gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_cancel_during_the_fork_wins(environment) -> None:
    server, env, kind = environment
    access = env.access_token()
    tasks: list[asyncio.Task[Any]] = []

    async def cancel_now(handle: dict[str, Any]) -> None:
        async def cancel() -> None:
            async with httpx.AsyncClient(
                    base_url=f"{env.url}/api/v1", timeout=30,
                    headers={"Authorization": f"Bearer {access}"}) as client:
                answer = await client.post(f"/executions/{handle['execution_id']}/cancel")
                assert answer.status_code == 200, answer.text

        if kind == "sqlite":
            await cancel()  # committed before the launch writes: its compare-and-set fails
        else:
            # the launch holds the row's lock: the cancel waits for its commit
            tasks.append(asyncio.get_running_loop().create_task(cancel()))

    handles = _wrap_submit(server, cancel_now)
    ended, execution = _run_to_end(env, "slow", "x")
    assert ended.status_code == 500 and ended.json()["name"] == "ExecutionFailed", ended.text
    assert execution["status"] == "Cancelled", execution
    assert execution["status_reason"] == "the execution was cancelled"
    assert execution["end_date"]
    (handle,) = handles
    assert _gone(handle["pid"]), "the cancelled execution's worker still runs"
    if kind == "sqlite":
        assert execution["start_date"] is None and execution["worker"] is None
    else:
        assert execution["worker"] == f"local-{handle['pid']}"


def test_a_finish_before_the_launch_commits_waits_for_it(environment) -> None:
    server, env, _ = environment

    async def hold_the_launch(handle: dict[str, Any]) -> None:
        # long enough for the forked worker to run the step and send its finish
        await asyncio.sleep(1.5)

    handles = _wrap_submit(server, hold_the_launch)
    ended, execution = _run_to_end(env, "echo", "held")
    assert ended.status_code == 200, ended.text
    assert [o["value"] for o in ended.json()["outputs"]] == ["held"]
    assert execution["status"] == "Succeeded", execution
    (handle,) = handles
    assert execution["worker"] == f"local-{handle['pid']}"
    assert execution["start_date"] and execution["start_date"] <= execution["end_date"]


def test_a_launch_reads_back_only_what_may_have_changed(environment) -> None:
    """On SQLite, the launch of an execution the service has just recorded reads its
    status, not the execution and its step again (they are the ones it recorded; the
    variables come from the warm calls' snapshot). On PostgreSQL it reads the execution's
    row locked (a cancel then waits)."""
    from sqlalchemy import event

    server, env, kind = environment
    state = server.server.config.app.state.gristmill
    engines = [state.engine.sync_engine]
    statements: list[str] = []
    until_fork: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    transactions = state.transactions
    plain_read = transactions.read

    async def read(what: Any, key: str, **kwargs: Any) -> Any:
        # on SQLite done on the loop's own connection, not the engine's (db/loop_reads.py)
        keep(None, None, str(what.statement))
        return await plain_read(what, key, **kwargs)

    transactions.read = read

    async def at_fork(handle: dict[str, Any]) -> None:
        until_fork.extend(statements)

    _wrap_submit(server, at_fork)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", keep)
    try:
        ended, execution = _run_to_end(env, "echo", "read")
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", keep)
        transactions.read = plain_read
    assert ended.status_code == 200 and execution["status"] == "Succeeded", ended.text
    created = next(i for i, s in enumerate(until_fork) if s.startswith("INSERT INTO executions"))
    launch = until_fork[created + 1:]
    if kind == "sqlite":
        assert any(s.startswith("SELECT executions.status FROM executions") for s in launch)
        assert not any(s.startswith("SELECT steps.") for s in launch), launch
        assert not any("executions.pipeline_id" in s for s in launch), launch
    else:
        assert any(s.startswith("SELECT steps.") for s in launch), launch
        assert any("executions.pipeline_id" in s and "FOR UPDATE" in s for s in launch), launch
