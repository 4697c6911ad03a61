"""Engine and session factory for one environment."""

from __future__ import annotations

from collections.abc import Callable
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
from gristmill_platform.db.wal_checkpoints import connection_pragmas

POOL_SIZE = 10
POOL_OVERFLOW = 20
POOL_TIMEOUT_S = 30.0


# How long a service connection waits for SQLite's write lock held by another one.
BUSY_TIMEOUT_MS = 15_000


def sqlite_pragmas(*, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
                   automatic_checkpoints: bool = True) -> tuple[str, ...]:
    """The settings of every connection of the service to its SQLite file. WAL lets
    readers proceed during a write; busy_timeout turns brief write contention between
    requests (and CLI commands) into a wait rather than "database is locked"."""
    return ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
            f"busy_timeout={busy_timeout_ms}", *connection_pragmas(automatic_checkpoints))


def apply_pragmas(pragmas: tuple[str, ...]) -> Callable[[Any, Any], None]:
    """A "connect" listener applying pragmas to each new DB-API connection."""
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return apply


def create_engine(database_url: str, *, automatic_checkpoints: bool = True) -> AsyncEngine:
    """automatic_checkpoints=False: SQLite's automatic WAL checkpoints off in this
    engine's connections, for a process that runs its own (db/wal_checkpoints.py)."""
    url = async_url(database_url)
    if is_sqlite(database_url):
        # SQLite serializes writes itself; the pool only bounds how many requests hold a
        # connection at once. Requests hold one briefly (long-polls and the principal's
        # check use short transactions, deps.py), so a pool as large as PostgreSQL's
        # never runs dry under the admitted load; past it a request waits, then 503.
        engine = create_async_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                                     pool_timeout=POOL_TIMEOUT_S,
                                     # the event loop writes on it too, never while a
                                     # statement of it is in flight (db/sqlite_cursor.py)
                                     connect_args={"check_same_thread": False})
        # first: the pragmas' own cursor is then a one-hop one too
        event.listen(engine.sync_engine, "connect", use_one_hop_cursors)
        event.listen(engine.sync_engine, "connect", apply_pragmas(
            sqlite_pragmas(automatic_checkpoints=automatic_checkpoints)))
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE,
                               max_overflow=POOL_OVERFLOW, pool_timeout=POOL_TIMEOUT_S)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
