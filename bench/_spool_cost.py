"""What making a low-latency answer durable costs on the answer's path (issue: nothing
answered is lost).

Before its answer leaves, every ended low-latency execution is appended to the spool
(platform/gristmill_platform/executions/spool.py): its database row, as one JSON line, one
write(). Here the real `Spool` appends the real rows the bench's own calls left in the
database (read back after the run), in a scratch folder on the same disk, and the cost per
append is set against the low-latency p50 measured in the same run."""

from __future__ import annotations

import statistics
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from gristmill_platform.executions.journal_writes import COLUMNS, EXECUTIONS
from gristmill_platform.executions.spool import Spool


def spool_cost(database: Path, low_latency_p50_ms: float, *, appends: int = 20_000
               ) -> dict[str, Any]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(
                select(EXECUTIONS).where(EXECUTIONS.c.deployment_name.is_not(None))
                .limit(500)).mappings()]
    finally:
        engine.dispose()
    if not rows:
        raise RuntimeError(f"no execution rows in {database} to spool")
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gristmill-spool-", dir=database.parent) as root:
        spool = Spool(Path(root))
        for row in islice(cycle(rows), appends):
            start = time.perf_counter()
            # what TrackingJournal.ended does: the row from the record, then the append
            spool.append({column: row.get(column) for column in COLUMNS})
            samples.append(time.perf_counter() - start)
        spool.written(spool.rotate())
    samples.sort()
    p50_ms = statistics.median(samples) * 1000
    p99_ms = samples[int(len(samples) * 0.99)] * 1000
    without = low_latency_p50_ms - p50_ms
    return {
        "appends": appends,
        "append_p50_us": round(p50_ms * 1000, 1),
        "append_p99_us": round(p99_ms * 1000, 1),
        # the p50 the same calls would have without the spool, and the overhead over it
        "low_latency_p50_overhead_pct": round(100 * p50_ms / without, 2),
        "target_overhead_pct_at_most": 15,
    }
