"""Execution tracking's list: filtered, sorted, paged by key (never by a growing OFFSET), so
a page costs the same with 100 or 100,000 executions. A sort is a column list ending in
(created_at, id), the id making the order total; each filter and each sort is served by an
index with those columns (migration 0007), so a page reads about one page of index. No total
is counted: counting the matches of a filter reads all of them."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.executions import Execution, top_level
from gristmill_platform.errors import BadRequest

SORTS: dict[str, tuple[Any, ...]] = {
    "created_at": (Execution.created_at, Execution.id),
    "pipeline_name": (Execution.pipeline_name, Execution.created_at, Execution.id),
    "status": (Execution.status, Execution.created_at, Execution.id),
}
TRIGGERS = ("run", "endpoint", "periodic")


@dataclass(frozen=True)
class ExecutionFilters:
    pipeline_name: str | None = None
    deployment_name: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class ExecutionPage:
    rows: Sequence[Execution]
    next_cursor: str | None


def _encode(values: Sequence[Any]) -> str:
    plain = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def _decode(cursor: str, width: int) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != width:
            raise TypeError(raw)
        values = [datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in raw]
        if not all(isinstance(v, str | datetime) for v in values):
            raise TypeError(values)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest("This page link is not valid any more: start from the first page"
                         ) from exc
    return values


class ExecutionListing:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _where(filters: ExecutionFilters) -> list[Any]:
        # a multi-step pipeline's node executions show inside their graph's execution
        conditions: list[Any] = [top_level()]
        if filters.pipeline_name:
            conditions.append(Execution.pipeline_name == filters.pipeline_name)
        if filters.deployment_name:
            conditions.append(Execution.deployment_name == filters.deployment_name)
        if filters.status:
            conditions.append(Execution.status == filters.status)
        if filters.trigger:
            if filters.trigger not in TRIGGERS:
                raise BadRequest(f"trigger must be one of {', '.join(TRIGGERS)}")
            conditions.append(Execution.execution_rule == filters.trigger)
        if filters.since:
            conditions.append(Execution.created_at >= filters.since)
        if filters.until:
            conditions.append(Execution.created_at <= filters.until)
        return conditions

    @classmethod
    def query(cls, filters: ExecutionFilters, *, sort: str = "created_at",
              descending: bool = True, cursor: str | None = None, limit: int = 50
              ) -> Select[Execution]:
        """The page's query: one row more than the page, to know whether another follows."""
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        if not 1 <= limit <= 500:
            raise BadRequest("limit must be from 1 to 500")
        columns = SORTS[sort]
        query = select(Execution).where(*cls._where(filters))
        if cursor:
            values = _decode(cursor, len(columns))
            last = tuple_(*(literal(v, c.type) for v, c in zip(values, columns, strict=True)))
            query = query.where(tuple_(*columns) < last if descending
                                else tuple_(*columns) > last)
        order = [c.desc() if descending else c.asc() for c in columns]
        return query.order_by(*order).limit(limit + 1)

    async def page(self, filters: ExecutionFilters, *, sort: str = "created_at",
                   descending: bool = True, cursor: str | None = None, limit: int = 50
                   ) -> ExecutionPage:
        columns = SORTS.get(sort, ())
        query = self.query(filters, sort=sort, descending=descending, cursor=cursor,
                           limit=limit)
        rows = list((await self.session.execute(query)).scalars().all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode([getattr(rows[-1], c.key) for c in columns])
        return ExecutionPage(rows, next_cursor)

    async def by_ids(self, ids: Sequence[str]) -> Sequence[Execution]:
        found = (await self.session.execute(select(Execution).where(Execution.id.in_(ids))
                                            )).scalars().all()
        order = {execution_id: i for i, execution_id in enumerate(ids)}
        return sorted(found, key=lambda e: order[e.id])

    async def counts_by_status(self) -> dict[str, int]:
        result = await self.session.execute(
            select(Execution.status, func.count()).group_by(Execution.status))
        return {status: int(count) for status, count in result.all()}
