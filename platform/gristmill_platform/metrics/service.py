from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.executions import Execution, ListMetricValue, MetricValue
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import BadRequest, NotFound
from gristmill_platform.metrics.repository import MetricFilters, MetricList, MetricRepository

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
# per list metric of an execution, as documented: one long list does not use up another's
MAX_LIST_VALUES_PER_EXECUTION = 50_000
MAX_VALUES_PER_CALL = 10_000
MAX_PER_PAGE = 5_000
# (MAX_PAGE - 1) * MAX_PER_PAGE rows is far beyond any history, and fits every database's
# integer offset
MAX_PAGE = 1_000_000
# values in one answer of list metrics in the per-list shape (about 20 MB of JSON)
MAX_VALUES_PER_PAGE = 1_000_000


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where} must be a finite number, got {value!r}")
    try:
        number = float(value)  # an int beyond a float's range (10**400) overflows here
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        shown = f"{value!r}" if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise BadRequest(f"{where} must be a finite number, got {shown}")
    return number


class MetricService:
    def __init__(self, repository: MetricRepository) -> None:
        self.repository = repository

    async def _execution(self, principal: Principal, execution_id: Any) -> Execution:
        if not isinstance(execution_id, str) or not execution_id:
            raise BadRequest("execution_id is required: metrics are recorded from inside a step")
        policy.require_own_execution(principal, execution_id, "Recording a metric")
        execution = await self.repository.session.get(Execution, execution_id)
        if execution is None:
            raise NotFound(f"Execution {execution_id!r} not found")
        return execution

    @staticmethod
    def check_name(name: str) -> str:
        if not NAME.match(name):
            raise BadRequest(f"Invalid metric name {name!r}: use letters, digits, '_', '.' or "
                             "'-', at most 255 characters")
        return name

    async def record(self, principal: Principal, name: str, value: Any, execution_id: Any
                     ) -> MetricValue:
        self.check_name(name)
        number = _number(value, "value")
        execution = await self._execution(principal, execution_id)
        row = await self.repository.single(execution.id, name)
        if row is None:
            row = MetricValue(execution_id=execution.id, name=name, value=number,
                              pipeline_name=execution.pipeline_name,
                              deployment_name=execution.deployment_name, created_at=utcnow())
            await self.repository.add(row)
        else:
            row.value, row.created_at = number, utcnow()
        return row

    async def append(self, principal: Principal, name: str, values: Any, execution_id: Any
                     ) -> int:
        self.check_name(name)
        if not isinstance(values, list) or not values:
            raise BadRequest("values must be a non-empty list of numbers")
        if len(values) > MAX_VALUES_PER_CALL:
            raise BadRequest(f"At most {MAX_VALUES_PER_CALL} values per request")
        numbers = [_number(v, f"values[{i}]") for i, v in enumerate(values)]
        execution = await self._execution(principal, execution_id)
        already = await self.repository.list_count(execution.id, name)
        if already + len(numbers) > MAX_LIST_VALUES_PER_EXECUTION:
            raise BadRequest(
                f"A list metric may hold at most {MAX_LIST_VALUES_PER_EXECUTION} values per "
                f"execution; {name!r} has {already} and the request adds {len(numbers)}",
                name="TooManyMetricValues")
        start = await self.repository.next_position(execution.id, name)
        now = utcnow()
        await self.repository.add_many([
            ListMetricValue(execution_id=execution.id, name=name, position=start + i, value=v,
                            pipeline_name=execution.pipeline_name,
                            deployment_name=execution.deployment_name, created_at=now)
            for i, v in enumerate(numbers)])
        return len(numbers)

    @staticmethod
    def _check_page(page: int, per_page: int) -> None:
        if not 1 <= page <= MAX_PAGE:
            # beyond it the row offset overflows the database's integers (SQLite, bigint)
            raise BadRequest(f"page must be between 1 and {MAX_PAGE}")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise BadRequest(f"items_per_page must be between 1 and {MAX_PER_PAGE}")

    async def page(self, model: Any, filters: MetricFilters, page: int, per_page: int
                   ) -> tuple[Sequence[Any], int]:
        self._check_page(page, per_page)
        return await self.repository.page(model, filters, page=page, per_page=per_page)

    async def lists(self, filters: MetricFilters, page: int, per_page: int
                    ) -> tuple[list[MetricList], int]:
        """One item per list metric (craft-ai-sdk 0.74's shape)."""
        self._check_page(page, per_page)
        lists, total, size = await self.repository.lists(
            filters, page=page, per_page=per_page, max_values=MAX_VALUES_PER_PAGE)
        if size > MAX_VALUES_PER_PAGE:
            raise BadRequest(
                f"This page of list metrics holds {size} values, more than the "
                f"{MAX_VALUES_PER_PAGE} one answer may carry: ask fewer items_per_page or "
                "filter by name or execution_id")
        return lists, total
