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
        # one pass over the window: each execution's latency, then per variant (window
        # functions) its counts and each ended execution's rank by latency; only the rows
        # that carry a figure come back (the first of each variant, those at the
        # percentiles' ranks, those with validation failures)
        recent = (select(Execution.pipeline_name, Execution.shadow, Execution.status,
                         Execution.validation_failures,
                         elapsed_ms(Execution.ended_at, Execution.created_at).label("ms"))
                  .where(Execution.deployment_name == deployment_name)
                  .order_by(Execution.created_at.desc()).limit(window).subquery())
        variant = (recent.c.pipeline_name, recent.c.shadow)
        ms = recent.c.ms
        ranked = select(
            *variant, ms, recent.c.validation_failures,
            # ended executions first, by latency: their positions are their ranks
            func.row_number().over(partition_by=variant, order_by=(ms.is_(None), ms))
            .label("position"),
            func.count().over(partition_by=variant).label("calls"),
            func.count(ms).over(partition_by=variant).label("ended"),
            func.sum(case((and_(ms.is_not(None), recent.c.status == "failed"), 1), else_=0))
            .over(partition_by=variant).label("failed"),
        ).subquery()
        # the nearest rank, as comparison.rank (ended >= 1 wherever it is compared)
        ranks = [(q, (ranked.c.ended * q + 99) // 100) for q in PERCENTILES]
        found = await self.session.execute(
            select(ranked.c.pipeline_name, ranked.c.shadow, ranked.c.ms,
                   ranked.c.validation_failures, ranked.c.calls, ranked.c.ended,
                   ranked.c.failed,
                   *(and_(ranked.c.ms.is_not(None), ranked.c.position == r) for _, r in ranks))
            .where(or_(ranked.c.position == 1, ranked.c.validation_failures.is_not(None),
                       *(ranked.c.position == r for _, r in ranks))))
        counts: dict[Variant, Counts] = {}
        latencies: dict[Variant, dict[int, float]] = {}
        failures: list[tuple[Variant, Sequence[str]]] = []
        for pipeline, shadow, latency, names, calls, ended, failed, *at in found.all():
            key: Variant = (pipeline, bool(shadow))
            counts[key] = Counts(int(calls), int(ended), int(failed or 0))
            for (q, _), hit in zip(ranks, at, strict=True):
                if hit:
                    latencies.setdefault(key, {})[q] = float(latency)
            if names:
                failures.append((key, names))
        return assemble(counts, latencies, failures)
