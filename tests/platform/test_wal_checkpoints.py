"""SQLite's WAL checkpoints run by the control service in its callers' pauses
(db/wal_checkpoints.py): its connections leave them off, the checkpointer copies the log
back once the warm calls pause (at the latest after its delay), and a stop copies what
is left."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from gristmill_platform.app import build_state, wal_checkpoints
from gristmill_platform.db.engine import create_engine, sqlite_pragmas
from gristmill_platform.db.wal_checkpoints import AUTOMATIC_OFF, WalCheckpoints
from gristmill_platform.executions.journal_writes import BatchWriter
from gristmill_platform.settings import Settings
from gristmill_platform.traffic import Traffic

PAGE_BYTES = 4096
ROW = "x" * 3000  # about a page per row


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    """A database file with a connection kept open on it meanwhile, that writes
    nothing: SQLite's last connection to close copies the log back, which would hide
    what the others did."""
    database = tmp_path / "db.sqlite3"
    keeper = sqlite3.connect(database)
    keeper.execute("PRAGMA journal_mode=WAL")
    # a read opens its side of the log's index (and ends: it holds no snapshot)
    keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()
    try:
        yield database
    finally:
        keeper.close()


async def write_pages(url: str, rows: int, *, automatic: bool) -> None:
    """rows rows of about a page each, one transaction each, through the service's own
    engine (its connection settings)."""
    engine = create_engine(url, automatic_checkpoints=automatic)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS t (v TEXT)"))
        for _ in range(rows):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": ROW})
    finally:
        await engine.dispose()


async def soon(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Until condition holds, at most seconds (then the test's assertion says what)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def log_frames(path: Path) -> int:
    """Frames in the WAL file (it is not truncated by a checkpoint, only reused)."""
    wal = path.with_name(path.name + "-wal")
    return max(0, (wal.stat().st_size - 32) // (PAGE_BYTES + 24)) if wal.exists() else 0


def test_the_service_connections_leave_checkpoints_to_the_service() -> None:
    assert AUTOMATIC_OFF in sqlite_pragmas(automatic_checkpoints=False)
    assert AUTOMATIC_OFF not in sqlite_pragmas(automatic_checkpoints=True)
    assert "busy_timeout=0" in sqlite_pragmas(busy_timeout_ms=0)


@pytest.mark.parametrize("automatic", [True, False])
def test_an_engine_checkpoints_by_itself_only_when_told(path: Path, automatic: bool
                                                        ) -> None:
    async def scenario() -> int:
        engine = create_engine(sqlite_url(path), automatic_checkpoints=automatic)
        async with engine.connect() as connection:
            setting = (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        await engine.dispose()
        await write_pages(sqlite_url(path), 1500, automatic=automatic)
        return int(setting or 0)

    setting = asyncio.run(scenario())
    assert setting == (1000 if automatic else 0)
    if automatic:  # SQLite copied the log back at 1,000 pages, then reused it
        assert log_frames(path) < 1200
    else:  # nobody did: the log holds every page written
        assert log_frames(path) >= 1500


def test_the_journals_connections_follow_the_same_setting(path: Path) -> None:
    async def scenario() -> None:
        engine = create_engine(sqlite_url(path), automatic_checkpoints=False)
        writer = BatchWriter(engine, sqlite_url(path), automatic_checkpoints=False)
        try:
            direct = writer._direct
            assert direct is not None
            with direct.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0
            inserts = writer._inserts
            assert inserts is not None
            assert "wal_autocheckpoint=0" in inserts._pragmas
            assert "busy_timeout=15000" in inserts._pragmas
        finally:
            writer.close()
            await engine.dispose()

    asyncio.run(scenario())


def test_a_checkpoint_waits_for_a_pause_of_the_calls(path: Path) -> None:
    async def scenario() -> None:
        await write_pages(sqlite_url(path), 50, automatic=False)
        traffic = Traffic()
        checkpoints = WalCheckpoints(str(path), traffic, interval_s=0.01, quiet_s=0.05,
                                     max_delay_s=60)
        traffic.enter()  # a warm call in flight
        checkpoints.start()
        await asyncio.sleep(0.3)
        assert checkpoints.last is None  # held while the call runs
        traffic.leave()
        await soon(lambda: checkpoints.last is not None)
        last = checkpoints.last
        assert last is not None and last.complete and last.copied_frames >= 50
        await checkpoints.shutdown()

    asyncio.run(scenario())


def test_under_calls_that_never_pause_it_runs_after_its_delay(path: Path) -> None:
    async def scenario() -> None:
        await write_pages(sqlite_url(path), 20, automatic=False)
        traffic = Traffic()
        traffic.enter()  # never leaves
        checkpoints = WalCheckpoints(str(path), traffic, interval_s=0.01, quiet_s=0.05,
                                     max_delay_s=0.1)
        checkpoints.start()
        await soon(lambda: checkpoints.last is not None)
        assert checkpoints.last is not None and checkpoints.last.complete
        await checkpoints.shutdown()

    asyncio.run(scenario())


def test_a_stop_copies_what_is_left(path: Path) -> None:
    async def scenario() -> None:
        await write_pages(sqlite_url(path), 30, automatic=False)
        checkpoints = WalCheckpoints(str(path), Traffic(), interval_s=3600)
        checkpoints.start()
        await checkpoints.shutdown()
        assert checkpoints.last is not None
        assert checkpoints.last.complete and checkpoints.last.log_frames >= 30

    asyncio.run(scenario())


def test_a_failed_checkpoint_is_logged_and_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no-such-folder" / "db.sqlite3"  # sqlite3 cannot open it

    async def scenario() -> None:
        checkpoints = WalCheckpoints(str(missing), Traffic(), interval_s=0.01, quiet_s=0)
        checkpoints.start()
        await soon(lambda: sum("WAL checkpoint" in r.message for r in caplog.records) >= 2)
        task = checkpoints._task
        assert task is not None and not task.done()  # still running, trying again
        await checkpoints.shutdown()  # its last checkpoint fails the same way, logged

    with caplog.at_level(logging.WARNING, logger="gristmill.db"):
        asyncio.run(scenario())
    assert sum("WAL checkpoint" in r.message for r in caplog.records) >= 3


def test_which_services_run_their_own_checkpoints(tmp_path: Path) -> None:
    def settings(**changes: object) -> Settings:
        return Settings(data_dir=tmp_path, **changes)  # type: ignore[arg-type]

    assert isinstance(wal_checkpoints(build_state(settings())), WalCheckpoints)
    assert wal_checkpoints(build_state(settings(sqlite_checkpoints="automatic"))) is None
    assert wal_checkpoints(build_state(settings(
        database_url="postgresql+psycopg://u@127.0.0.1:5432/none"))) is None
    with pytest.raises(ValidationError, match="sqlite_checkpoints"):
        settings(sqlite_checkpoints="sometimes")


def test_a_running_service_runs_them(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from gristmill_platform.app import create_app
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import resolve_settings

    settings = resolve_settings(Settings(data_dir=tmp_path / "env"))
    prepare_environment(settings)
    with TestClient(create_app(settings)) as client:
        services = client.app.state.gristmill.started  # type: ignore[attr-defined]
        checkpoints = services.checkpoints
        assert isinstance(checkpoints, WalCheckpoints)
        deadline = time.monotonic() + 30
        while checkpoints.last is None and time.monotonic() < deadline:
            assert client.get("/readyz").status_code == 200
            time.sleep(0.1)
        assert checkpoints.last is not None  # a turn once no call was in flight
        assert checkpoints.last.complete
