from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db.inserts import insert_row
from gristmill_platform.db.loop_reads import Read
from gristmill_platform.db.models.deployments import Deployment
from gristmill_platform.db.models.executions import (
    Execution,
    ExecutionLog,
    ListMetricValue,
    MetricValue,
    top_level,
)


@dataclass(frozen=True)
class ExecutionOutcome:
    """What the outputs long-poll and an endpoint's result need of an execution: the
    attributes of Execution they read, so that either answers from one or the other."""
    id: str
    deployment_id: str | None
    status: str
    status_reason: str | None
    outputs: list[dict[str, Any]]


_STATUS = select(Execution.status).where(Execution.id == bindparam("execution_id"))
_OUTCOME = (select(Execution.id, Execution.deployment_id, Execution.status,
                   Execution.status_reason, Execution.outputs)
            .where(Execution.id == bindparam("execution_id")))
# Statements of every elastic execution, built once: a statement built per call costs its
# construction and its cache key each time, about a tenth of the control service's CPU
# per elastic execution between them (profiled, docs/performance-log.md).
_LOCKED = select(Execution).where(Execution.id == bindparam("execution_id")).with_for_update()
_TABLE = cast(Table, Execution.__table__)  # typed as any FromClause
# no SET clause: a Core UPDATE without values() sets the columns its parameters name
_SET_COLUMNS = update(_TABLE).where(_TABLE.c.id == bindparam("target_execution_id"))
_COLUMNS = frozenset(_TABLE.c.keys())
# the same, only while the row still has the status the writer read
_SET_COLUMNS_IF = _SET_COLUMNS.where(_TABLE.c.status == bindparam("expected_status"))


def _outcome(row: Any) -> ExecutionOutcome | None:
    if row is None:
        return None
    return ExecutionOutcome(row[0], row[1], row[2], row[3], list(row[4] or []))


# An execution's status and outputs without a session: three columns need none of the
# ORM's session and entity loading, which cost more than the query (auth's STANDING, the
# same for each request's token). Through Transactions.read: on the event loop on SQLite.
OUTCOME: Read[ExecutionOutcome | None] = Read(_OUTCOME, _outcome, key="execution_id")
# An execution's status (None: no such execution), what an elastic launch reads back
STATUS: Read[str | None] = Read(
    _STATUS, lambda row: None if row is None else str(row[0]), key="execution_id")


class ExecutionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, execution_id: str, *, for_update: bool = False) -> Execution | None:
        if for_update:
            result = await self.session.execute(_LOCKED, {"execution_id": execution_id})
            return result.scalar_one_or_none()
        return await self.session.get(Execution, execution_id)

    async def set_columns(self, execution_id: str, **values: Any) -> bool:
        """Write these columns of the execution's row without reading it first; False
        when there is no such execution (deleted meanwhile). A plain UPDATE on the
        session's connection: the ORM's bulk-update path (entity lookup, its own compile,
        synchronization options) cost more than the statement, twice per elastic
        execution, with nothing to synchronize (profiled, docs/performance-log.md).
        What the session holds unflushed is flushed first, as the ORM path would."""
        return await self._update(_SET_COLUMNS, {"target_execution_id": execution_id},
                                  values)

    async def set_columns_if(self, execution_id: str, expected_status: str,
                             **values: Any) -> bool:
        """set_columns, only if the row's status is still ``expected_status`` (a
        compare-and-set): False when it changed meanwhile (a cancel) or the row is gone.
        On SQLite, where a read takes no lock, what guards a write decided on that read."""
        return await self._update(
            _SET_COLUMNS_IF,
            {"target_execution_id": execution_id, "expected_status": expected_status},
            values)

    async def _update(self, statement: Any, where: Mapping[str, Any],
                      values: Mapping[str, Any]) -> bool:
        await self._flush_pending()
        if not values or not set(values) <= _COLUMNS:  # the statement would ignore them
            raise ValueError(f"not columns of executions: {sorted(values)}")
        connection = await self.session.connection()
        result = await connection.execute(statement, {**where, **values})
        return bool(result.rowcount)

    async def _flush_pending(self) -> None:
        if self.session.new or self.session.dirty or self.session.deleted:
            await self.session.flush()

    async def set_many(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """set_columns for several executions in one statement (an executemany): {execution
        id: {column: value}}, the same columns for every row."""
        if not rows:
            return
        columns = {frozenset(values) for values in rows.values()}
        if len(columns) != 1 or not columns.pop() <= _COLUMNS or not next(iter(rows.values())):
            raise ValueError("set_many needs the same columns of executions for every row")
        await self._flush_pending()
        connection = await self.session.connection()
        await connection.execute(_SET_COLUMNS, [{"target_execution_id": execution_id, **values}
                                                for execution_id, values in rows.items()])

    async def add(self, execution: Execution, *, flush: bool = True) -> None:
        """flush=False: written with the session's next flush (a graph's ready nodes, one
        INSERT for all of them)."""
        self.session.add(execution)
        if flush:
            await self.session.flush()

    async def insert(self, execution: Execution) -> None:
        """Written now with a Core INSERT, not added to the session (db/inserts.py)."""
        await insert_row(self.session, execution)

    async def for_pipeline(self, pipeline_name: str) -> Sequence[Execution]:
        result = await self.session.execute(
            select(Execution).where(Execution.pipeline_name == pipeline_name,
                                    top_level())
            .order_by(Execution.created_at))
        return result.scalars().all()

    async def metric_values(self, execution_ids: Sequence[str]) -> dict[str, float]:
        """The single-value metrics these executions recorded (the latest per name)."""
        if not execution_ids:
            return {}
        result = await self.session.execute(
            select(MetricValue).where(MetricValue.execution_id.in_(execution_ids))
            .order_by(MetricValue.created_at, MetricValue.id))
        return {row.name: row.value for row in result.scalars().all()}

    async def list_metric_values(self, execution_ids: Sequence[str]
                                 ) -> dict[str, list[float]]:
        """The list metrics these executions recorded, each name's values in the order
        they were recorded."""
        if not execution_ids:
            return {}
        result = await self.session.execute(
            select(ListMetricValue).where(ListMetricValue.execution_id.in_(execution_ids))
            .order_by(ListMetricValue.created_at, ListMetricValue.id))
        values: dict[str, list[float]] = {}
        for row in result.scalars().all():
            values.setdefault(row.name, []).append(row.value)
        return values

    async def cached(self, key: str) -> Execution | None:
        """The latest succeeded node execution with this cache key."""
        result = await self.session.execute(
            select(Execution).where(Execution.cache_key == key,
                                    Execution.status == "succeeded")
            .order_by(Execution.ended_at.desc()).limit(1))
        return result.scalars().first()

    async def nodes(self, parent_id: str) -> Sequence[Execution]:
        """The executions of a graph execution's nodes."""
        result = await self.session.execute(
            select(Execution).where(Execution.parent_id == parent_id)
            .order_by(Execution.created_at))
        return result.scalars().all()

    async def waiting_elastic(self) -> list[Execution]:
        """Pending elastic executions no worker was started for, oldest first."""
        result = await self.session.execute(
            select(Execution, Deployment.mode)
            .outerjoin(Deployment, Execution.deployment_id == Deployment.id)
            .where(Execution.status == "pending")
            .order_by(Execution.created_at))
        return [execution for execution, mode in result.all()
                if execution.handle is None and mode != "low_latency"]

    async def active(self) -> Sequence[Execution]:
        result = await self.session.execute(
            select(Execution).where(Execution.status.in_(("pending", "running"))))
        return result.scalars().all()

    async def active_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are executions still pending or running (the orphan sweeper's
        question about the pods it finds), in chunks that keep the IN list small."""
        live: set[str] = set()
        unique = sorted(set(ids))
        for first in range(0, len(unique), 500):
            result = await self.session.execute(
                select(Execution.id).where(Execution.id.in_(unique[first:first + 500]),
                                           Execution.status.in_(("pending", "running"))))
            live.update(result.scalars().all())
        return live

    async def active_on_worker(self, worker: str) -> Execution | None:
        """The live execution a worker (an elastic pool pod) was given, if any."""
        result = await self.session.execute(
            select(Execution).where(Execution.status.in_(("pending", "running")),
                                    Execution.worker == worker)
            .order_by(Execution.created_at.desc()).limit(1))
        return result.scalars().first()

    async def delete(self, execution: Execution) -> None:
        await self.session.execute(
            delete(ExecutionLog).where(ExecutionLog.execution_id == execution.id))
        await self.session.delete(execution)
        await self.session.flush()

    # -- logs --

    async def next_log_seq(self, execution_id: str) -> int:
        result = await self.session.execute(
            select(func.max(ExecutionLog.seq)).where(ExecutionLog.execution_id == execution_id))
        current = result.scalar_one()
        return int(current) + 1 if current is not None else 0

    async def add_logs(self, rows: Sequence[ExecutionLog]) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def logs(self, execution_id: str, *, start: datetime | None, end: datetime | None,
                   limit: int | None, with_ids: Sequence[str] = ()
                   ) -> Sequence[ExecutionLog]:
        """An execution's log lines in order; with_ids adds other executions' (a graph's
        nodes), interleaved by time."""
        if with_ids:
            ids = [execution_id, *with_ids]
            query = select(ExecutionLog).where(ExecutionLog.execution_id.in_(ids))
            query = _window(query, start, end).order_by(ExecutionLog.timestamp,
                                                        ExecutionLog.id)
            if limit is not None:
                query = query.limit(limit)
            return (await self.session.execute(query)).scalars().all()
        query = select(ExecutionLog).where(ExecutionLog.execution_id == execution_id)
        if start is not None:
            query = query.where(ExecutionLog.timestamp >= start)
        if end is not None:
            query = query.where(ExecutionLog.timestamp <= end)
        query = query.order_by(ExecutionLog.seq)
        if limit is not None:
            query = query.limit(limit)
        result = await self.session.execute(query)
        return result.scalars().all()


def _window(query: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        query = query.where(ExecutionLog.timestamp >= start)
    if end is not None:
        query = query.where(ExecutionLog.timestamp <= end)
    return query
