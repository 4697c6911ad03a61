"""Execution tracking's list: filtered, sorted, paged by key (never by a growing OFFSET), so
a page costs the same with 100 or 100,000 executions. Each filter + sort pair is backed by
an index on (filter column, created_at) or (sort column)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.models.executions import Execution
from gristmill_platform.errors import BadRequest

SORTS = {"created_at": Execution.created_at, "pipeline_name": Execution.pipeline_name,
         "status": Execution.status}
TRIGGERS = ("run", "endpoint", "periodic")
COUNT_CAP = 10_000


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
    # exact up to COUNT_CAP; counting further would read the whole filtered range
    total: int
    total_capped: bool
    sort: str = "created_at"
    descending: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _encode(value: Any, execution_id: str) -> str:
    if isinstance(value, datetime):
        value = {"t": value.isoformat()}
    raw = json.dumps([value, execution_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, execution_id = json.loads(raw)
        if sort == "created_at":
            value = datetime.fromisoformat(value["t"])
        if not isinstance(execution_id, str):
            raise TypeError(execution_id)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest("This page link is not valid any more: start from the first page"
                         ) from exc
    return value, execution_id


class ExecutionListing:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _where(filters: ExecutionFilters) -> list[Any]:
        conditions: list[Any] = []
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

    async def page(self, filters: ExecutionFilters, *, sort: str = "created_at",
                   descending: bool = True, cursor: str | None = None, limit: int = 50
                   ) -> ExecutionPage:
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        if not 1 <= limit <= 500:
            raise BadRequest("limit must be from 1 to 500")
        column = SORTS[sort]
        conditions = self._where(filters)
        query = select(Execution).where(*conditions)
        if cursor:
            value, last_id = _decode(cursor, sort)
            if descending:
                query = query.where(or_(column < value, and_(column == value,
                                                             Execution.id < last_id)))
            else:
                query = query.where(or_(column > value, and_(column == value,
                                                             Execution.id > last_id)))
        order = (column.desc(), Execution.id.desc()) if descending else (column.asc(),
                                                                         Execution.id.asc())
        rows = list((await self.session.execute(query.order_by(*order).limit(limit + 1)))
                    .scalars().all())
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = _encode(getattr(last, sort), last.id)
        capped = select(Execution.id).where(*conditions).limit(COUNT_CAP + 1).subquery()
        total = int((await self.session.execute(select(func.count()).select_from(capped)))
                    .scalar_one())
        return ExecutionPage(rows, next_cursor, min(total, COUNT_CAP), total > COUNT_CAP,
                             sort, descending)

    async def by_ids(self, ids: Sequence[str]) -> Sequence[Execution]:
        found = (await self.session.execute(select(Execution).where(Execution.id.in_(ids))
                                            )).scalars().all()
        order = {execution_id: i for i, execution_id in enumerate(ids)}
        return sorted(found, key=lambda e: order[e.id])

    async def counts_by_status(self) -> dict[str, int]:
        result = await self.session.execute(
            select(Execution.status, func.count()).group_by(Execution.status))
        return {status: int(count) for status, count in result.all()}
