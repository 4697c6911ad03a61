"""A new ORM object's row written with a Core INSERT instead of the unit of work.

An elastic execution is recorded with two new rows (the execution and its execution
token) on every run. The ORM's flush of them (its unit of work: dependency sorting,
state bookkeeping, the identity map, the flush events) cost more than the INSERTs it
issues: 230 us more CPU per run back to back, 370 us after other work (profiled,
docs/performance-log.md). The object is left as it was built, transient: nothing
in the session knows its row, so it suits a row that nothing reads back in the same
transaction."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Insert, Table, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.base import Base

_statements: dict[Table, Insert] = {}


def column_values(instance: Base) -> dict[str, Any]:
    """The values an ORM object was given, by column name (a Core INSERT of it gives the
    others their column defaults, as the flush would)."""
    state = inspect(instance)
    given = state.dict
    return {attribute.columns[0].key: given[attribute.key]
            for attribute in state.mapper.column_attrs if attribute.key in given}


async def insert_row(session: AsyncSession, instance: Base) -> None:
    """Write ``instance``'s row now, in the session's transaction, without adding it."""
    table = cast(Table, instance.__table__)
    statement = _statements.get(table)
    if statement is None:
        statement = _statements[table] = insert(table)
    await session.execute(statement, column_values(instance))
