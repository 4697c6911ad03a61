"""Engine and session factory for one environment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gristmill_platform.db.sqlite_cursor import use_one_hop_cursors
from gristmill_platform.db.urls import async_url, is_sqlite

POOL_SIZE = 10
POOL_OVERFLOW = 20
POOL_TIMEOUT_S = 30.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; busy_timeout turns brief write contention
    # between requests (and CLI commands) into a wait rather than "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def create_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    if is_sqlite(database_url):
        # SQLite serializes writes itself; the pool only bounds how many requests hold a
        # connection at once. Requests hold one briefly (long-polls and the principal's
        # check use short transactions, deps.py), so a pool as large as PostgreSQL's
        # never runs dry under the admitted load; past it a request waits, then 503.
        engine = create_async_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                                     pool_timeout=POOL_TIMEOUT_S)
        # first: the pragmas' own cursor is then a one-hop one too
        event.listen(engine.sync_engine, "connect", use_one_hop_cursors)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE,
                               max_overflow=POOL_OVERFLOW, pool_timeout=POOL_TIMEOUT_S)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
