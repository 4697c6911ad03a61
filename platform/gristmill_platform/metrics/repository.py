from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from gristmill_platform.db.models.executions import ListMetricValue, MetricValue


@dataclass(frozen=True)
class MetricList:
    """A list metric of one execution, its values in the order they were recorded."""

    name: str
    execution_id: str
    pipeline_name: str | None
    deployment_name: str | None
    created_at: datetime
    values: list[float]


@dataclass(frozen=True)
class MetricFilters:
    name: str | None = None
    pipeline_name: str | None = None
    deployment_name: str | None = None
    execution_id: str | None = None


def _filtered(model: Any, filters: MetricFilters) -> Select[Any]:
    query = select(model)
    for field in ("name", "pipeline_name", "deployment_name", "execution_id"):
        value = getattr(filters, field)
        if value is not None:
            query = query.where(getattr(model, field) == value)
    return query


class MetricRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def single(self, execution_id: str, name: str) -> MetricValue | None:
        result = await self.session.execute(select(MetricValue).where(
            MetricValue.execution_id == execution_id, MetricValue.name == name))
        return result.scalar_one_or_none()

    async def add(self, row: MetricValue | ListMetricValue) -> None:
        self.session.add(row)
        await self.session.flush()

    async def add_many(self, rows: Sequence[ListMetricValue]) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def list_count(self, execution_id: str, name: str) -> int:
        result = await self.session.execute(select(func.count()).select_from(ListMetricValue)
                                            .where(ListMetricValue.execution_id == execution_id,
                                                   ListMetricValue.name == name))
        return int(result.scalar_one())

    async def next_position(self, execution_id: str, name: str) -> int:
        result = await self.session.execute(select(func.max(ListMetricValue.position)).where(
            ListMetricValue.execution_id == execution_id, ListMetricValue.name == name))
        current = result.scalar_one()
        return int(current) + 1 if current is not None else 0

    async def page(self, model: Any, filters: MetricFilters, *, page: int, per_page: int
                   ) -> tuple[Sequence[Any], int]:
        query = _filtered(model, filters)
        total = await self.session.execute(select(func.count()).select_from(query.subquery()))
        order = [model.created_at, model.id]
        rows = await self.session.execute(
            query.order_by(*order).offset((page - 1) * per_page).limit(per_page))
        return rows.scalars().all(), int(total.scalar_one())

    async def lists(self, filters: MetricFilters, *, page: int, per_page: int,
                    max_values: int) -> tuple[list[MetricList], int, int]:
        """A page of list metrics, one per (execution, name), in the order they were
        started; (lists, how many in all, how many values the page would hold). The
        values are not read when the page holds more than max_values."""
        m = ListMetricValue
        groups = (_filtered(m, filters).with_only_columns(
            m.execution_id, m.name, func.min(m.created_at).label("started"),
            func.min(m.id).label("first"), func.count().label("size"))
            .group_by(m.execution_id, m.name))
        total = await self.session.execute(select(func.count()).select_from(groups.subquery()))
        found = (await self.session.execute(
            groups.order_by("started", "first").offset((page - 1) * per_page)
            .limit(per_page))).all()
        size = sum(int(group.size) for group in found)
        if not found or size > max_values:
            return [], int(total.scalar_one()), size
        rows = (await self.session.execute(
            select(m).where(tuple_(m.execution_id, m.name).in_(
                [(group.execution_id, group.name) for group in found]))
            .order_by(m.execution_id, m.name, m.position))).scalars().all()
        values: dict[tuple[str, str], list[ListMetricValue]] = {}
        for row in rows:
            values.setdefault((row.execution_id, row.name), []).append(row)
        lists = []
        for group in found:
            kept = values.get((group.execution_id, group.name), [])
            if kept:  # gone between the two reads (its execution deleted): left out
                lists.append(MetricList(
                    group.name, group.execution_id, kept[0].pipeline_name,
                    kept[0].deployment_name, group.started, [r.value for r in kept]))
        return lists, int(total.scalar_one()), size

    async def names(self, model: Any) -> Sequence[str]:
        result = await self.session.execute(select(model.name).distinct().order_by(model.name))
        return result.scalars().all()
