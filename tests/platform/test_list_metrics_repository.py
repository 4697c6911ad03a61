"""List metrics one item per list (craft-ai-sdk 0.74's shape), read by the database on
SQLite and PostgreSQL: values in their recorded order, lists in the order they began,
pages of lists, the filters, and the bound on the values one answer may carry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.executions import Execution, ListMetricValue
from gristmill_platform.db.urls import sync_url
from gristmill_platform.errors import BadRequest
from gristmill_platform.metrics import service as service_module
from gristmill_platform.metrics.repository import MetricFilters, MetricList, MetricRepository
from gristmill_platform.metrics.service import MetricService
from tests.conftest import DatabaseUnderTest

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _execution(execution_id: str, pipeline: str) -> dict[str, Any]:
    return {"id": execution_id, "pipeline_name": pipeline, "step_name": "s",
            "execution_rule": "run", "status": "succeeded", "inputs": [], "outputs": [],
            "created_at": T0}


def _values(execution_id: str, pipeline: str, name: str, values: list[float],
            start: datetime) -> list[dict[str, Any]]:
    # recorded out of id order on purpose: position, not id, is the values' order
    return [{"execution_id": execution_id, "name": name, "position": position,
             "value": value, "pipeline_name": pipeline, "created_at": start}
            for position, value in reversed(list(enumerate(values)))]


def test_lists_are_read_whole_in_order_and_paged(database: DatabaseUnderTest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    migrate.upgrade(database.url)
    tag = uuid.uuid4().hex[:8]
    first, second = f"lm-{tag}-1", f"lm-{tag}-2"
    pipeline = f"lm-{tag}"
    engine = sa.create_engine(sync_url(database.url))
    with engine.begin() as connection:
        connection.execute(sa.insert(Execution.__table__),
                           [_execution(first, pipeline), _execution(second, pipeline)])
        connection.execute(sa.insert(ListMetricValue.__table__), [
            *_values(second, pipeline, "loss", [9.0, 8.0], T0 + timedelta(seconds=2)),
            *_values(first, pipeline, "loss", [3.0, 2.0, 1.0], T0),
            *_values(first, pipeline, "acc", [0.5], T0 + timedelta(seconds=1)),
        ])
    engine.dispose()

    async def read(filters: MetricFilters, page: int, per_page: int, max_values: int = 100
                   ) -> tuple[list[MetricList], int, int]:
        async_engine = create_engine(database.url)
        try:
            async with create_session_factory(async_engine)() as session:
                return await MetricRepository(session).lists(
                    filters, page=page, per_page=per_page, max_values=max_values)
        finally:
            await async_engine.dispose()

    async def serve(filters: MetricFilters, page: int, per_page: int
                    ) -> tuple[list[MetricList], int]:
        async_engine = create_engine(database.url)
        try:
            async with create_session_factory(async_engine)() as session:
                return await MetricService(MetricRepository(session)).lists(
                    filters, page, per_page)
        finally:
            await async_engine.dispose()

    everything = MetricFilters(pipeline_name=pipeline)
    lists, total, size = asyncio.run(read(everything, 1, 10))
    assert (total, size) == (3, 6)
    assert [(m.execution_id, m.name, m.values) for m in lists] == [
        (first, "loss", [3.0, 2.0, 1.0]), (first, "acc", [0.5]), (second, "loss", [9.0, 8.0])]
    assert lists[0].pipeline_name == pipeline and lists[0].deployment_name is None
    assert lists[0].created_at.replace(tzinfo=UTC) == T0

    paged = [asyncio.run(read(everything, page, 2)) for page in (1, 2, 3)]
    assert [[(m.execution_id, m.name) for m in lists] for lists, _, _ in paged] == [
        [(first, "loss"), (first, "acc")], [(second, "loss")], []]
    assert {total for _, total, _ in paged} == {3}

    named = asyncio.run(read(MetricFilters(name="loss", execution_id=second), 1, 10))
    assert [(m.execution_id, m.values) for m in named[0]] == [(second, [9.0, 8.0])]
    assert named[1] == 1

    # a page over the bound: its size is told, its values are not read
    assert asyncio.run(read(everything, 1, 10, max_values=5)) == ([], 3, 6)
    assert asyncio.run(read(everything, 1, 10, max_values=6))[2] == 6

    # the service refuses such a page, saying how to ask
    monkeypatch.setattr(service_module, "MAX_VALUES_PER_PAGE", 5)
    with pytest.raises(BadRequest) as caught:
        asyncio.run(serve(everything, 1, 10))
    assert caught.value.message.startswith("This page of list metrics holds 6 values, more "
                                           "than the 5 one answer may carry")
    assert [m.values for m in asyncio.run(serve(everything, 2, 2))[0]] == [[9.0, 8.0]]
    with pytest.raises(BadRequest):
        asyncio.run(serve(everything, 0, 2))
