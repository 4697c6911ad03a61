"""The figures of the per-variant comparison, computed by the database over a deployment's
most recent executions: counts by a GROUP BY, latency percentiles by a window function
(the nearest rank, as comparison.rank), and only the executions with validation failures
read back. A deployment read then costs a few rows, not the 10,000 executions compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from gristmill_platform.db.models.executions import Execution
from gristmill_platform.deployments.comparison import (
    PERCENTILES,
    WINDOW,
    Counts,
    Variant,
    assemble,
)


class elapsed_ms(FunctionElement[float]):  # lower case: it reads as the SQL it compiles to
    """Milliseconds from the second timestamp to the first."""

    type = Float()
    inherit_cache = True


@compiles(elapsed_ms)
def _elapsed_ms(element: elapsed_ms, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = (compiler.process(c, **kw) for c in element.clauses)
    return f"(EXTRACT(EPOCH FROM ({end} - {start})) * 1000)"


@compiles(elapsed_ms, "sqlite")
def _elapsed_ms_sqlite(element: elapsed_ms, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps timestamps as text, 'YYYY-MM-DD HH:MM:SS.ffffff': whole seconds from
    # strftime, the fraction from character 20 on (julianday would round to the millisecond)
    end, start = (compiler.process(c, **kw) for c in element.clauses)
    return (f"((strftime('%s', {end}) - strftime('%s', {start})) * 1000.0"
            f" + (CAST(substr({end}, 20) AS REAL) - CAST(substr({start}, 20) AS REAL))"
            " * 1000.0)")


class ComparisonRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def variants(self, deployment_name: str, window: int = WINDOW
                       ) -> list[dict[str, Any]]:
        recent = (select(Execution.pipeline_name, Execution.shadow, Execution.status,
                         Execution.created_at, Execution.ended_at,
                         Execution.validation_failures)
                  .where(Execution.deployment_name == deployment_name)
                  .order_by(Execution.created_at.desc()).limit(window).subquery())
        variant = (recent.c.pipeline_name, recent.c.shadow)
        ended = recent.c.ended_at.is_not(None)

        counted = await self.session.execute(
            select(*variant, func.count(), func.count(recent.c.ended_at),
                   func.sum(case((and_(ended, recent.c.status == "failed"), 1), else_=0)))
            .group_by(*variant))
        counts = {(pipeline, bool(shadow)): Counts(int(calls), int(done), int(failed or 0))
                  for pipeline, shadow, calls, done, failed in counted.all()}

        durations = (select(*variant,
                            elapsed_ms(recent.c.ended_at, recent.c.created_at).label("ms"))
                     .where(ended).subquery())
        by = (durations.c.pipeline_name, durations.c.shadow)
        timed = (select(*by, durations.c.ms,
                        func.row_number().over(partition_by=by, order_by=durations.c.ms)
                        .label("position"),
                        func.count().over(partition_by=by).label("n"))
                 .subquery())
        # n >= 1 here, so the rank is at least 1 without comparison.rank's max()
        ranks = [(q, (timed.c.n * q + 99) // 100) for q in PERCENTILES]
        picked = await self.session.execute(
            select(timed.c.pipeline_name, timed.c.shadow, timed.c.ms,
                   *(case((timed.c.position == r, q), else_=None) for q, r in ranks))
            .where(or_(*(timed.c.position == r for _, r in ranks))))
        latencies: dict[Variant, dict[int, float]] = {}
        for pipeline, shadow, ms, *which in picked.all():
            for q in which:
                if q is not None:
                    latencies.setdefault((pipeline, bool(shadow)), {})[int(q)] = float(ms)

        flagged = await self.session.execute(
            select(*variant, recent.c.validation_failures)
            .where(recent.c.validation_failures.is_not(None)))
        failures: list[tuple[Variant, Sequence[str]]] = [
            ((pipeline, bool(shadow)), names or ()) for pipeline, shadow, names in flagged.all()]
        return assemble(counts, latencies, failures)
