"""Reads outside any transaction, done on the event loop itself on SQLite.

Each request's token check and each long-poll's read is one Core statement on a bare
connection (Transactions.read). Through the async engine that statement already runs on
the event loop's thread (db/sqlite_cursor.py: LoopReader), yet SQLAlchemy's asyncio layer
around it cost three times the statement: a greenlet for the checkout, one for the
execute, one for the close, and a task to shield the close (profiled, 120 us against
34 us per read, docs/runs-and-executions.md). Here the same query function runs on a
plain (synchronous) SQLAlchemy connection to the same file, opened by and used on the
calling thread only, read-only, never waiting for a lock.

The query is given back (the caller then runs it on the async engine, as before) when it
cannot be done at once: a lock held elsewhere kept it out (busy_timeout=0), its own work
ran past LOOP_READ_BUDGET_S (interrupted; that query is remembered and always given back
after), or any other database error (the async engine's connection then raises the real
one). PostgreSQL and SQLite in memory have no LoopReads: their reads take the async path.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import SingletonThreadPool

from gristmill_platform.db.sqlite_cursor import (
    LOOP_READ_BUDGET_S,
    PROGRESS_EVERY,
    SLOW_KEPT,
    interrupted,
)
from gristmill_platform.db.urls import sqlite_file, sync_url

T = TypeVar("T")

# a read by one key (a token's id, an execution's), on a synchronous connection
Query = Callable[[Connection, str], T]


class GivenBack:
    """What LoopReads.run returns for a query it did not do."""


GIVEN_BACK: Final = GivenBack()

# As the LoopReader's (db/sqlite_cursor.py): read-only, never waits for a lock, a small
# page cache (the index pages of key lookups).
PRAGMAS = ("query_only=ON", "busy_timeout=0", "cache_size=-512")


def _settings(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


class LoopReads:
    """One read-only connection per thread that reads (in the service, the event loop's)
    to one SQLite file."""

    def __init__(self, database_url: str) -> None:
        # one connection per thread, made and used by that thread alone (sqlite3's
        # same-thread check on): a read here runs to its end before anything else on the
        # thread, so one is all it ever needs
        self.engine: Engine = create_sync_engine(sync_url(database_url),
                                                 poolclass=SingletonThreadPool)
        event.listen(self.engine, "connect", _settings)
        self.slow: set[Callable[..., Any]] = set()

    def run(self, query: Query[T], key: str) -> T | GivenBack:
        """query(connection, key) done here, or GIVEN_BACK (nothing of it kept)."""
        if query in self.slow:
            return GIVEN_BACK
        past = False
        try:
            with self.engine.connect() as connection:
                driver = connection.connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                deadline = time.perf_counter() + LOOP_READ_BUDGET_S

                def past_budget() -> bool:
                    nonlocal past
                    past = time.perf_counter() > deadline
                    return past

                driver.set_progress_handler(past_budget, PROGRESS_EVERY)
                try:
                    return query(connection, key)
                finally:
                    driver.set_progress_handler(None, 0)
        except DBAPIError as error:
            if (past and isinstance(error.orig, sqlite3.Error) and interrupted(error.orig)
                    and len(self.slow) < SLOW_KEPT):
                self.slow.add(query)
            return GIVEN_BACK

    def dispose(self) -> None:
        self.engine.dispose()


def loop_reads(database_url: str) -> LoopReads | None:
    """LoopReads for a SQLite file's database; None for any other."""
    return LoopReads(database_url) if sqlite_file(database_url) is not None else None
