"""Exporting a deployment's executions (deployments/export.py): rows per second and the
process's peak memory, for --rows executions in a SQLite database, to Parquet and JSON Lines.

The executions are inserted directly (fast, in bulk) into a fresh environment's database;
the export then runs in this process exactly as the route runs it (batches read by key,
converted with pyarrow in a thread, the file uploaded to the local data store). Peak
memory is the process's maximum resident set size (ru_maxrss) before and after each
export (the growth is what the export took at its peak). Writes
bench/results/export.json.

    .venv/bin/python bench/export.py [--rows 1000000] [--formats parquet,jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "export.json"
INSERT_CHUNK = 10_000


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _fill(state: Any, rows: int) -> Any:
    from gristmill_platform.db.models.deployments import Deployment
    from gristmill_platform.db.models.executions import Execution
    from gristmill_platform.db.models.steps import Pipeline, Step

    step = Step(id=str(uuid.uuid4()), name="bench", function_path="src/s.py",
                function_name="f", origin="local", inputs=[], outputs=[])
    pipeline = Pipeline(id=str(uuid.uuid4()), name="bench", step_id=step.id)
    deployment = Deployment(id=str(uuid.uuid4()), name="bench", pipeline_id=pipeline.id,
                            pipeline_name="bench", execution_rule="endpoint", mode="elastic")
    async with state.transactions() as session:
        session.add(step)
        await session.flush()
        session.add(pipeline)
        await session.flush()
        session.add(deployment)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, rows, INSERT_CHUNK):
        chunk = []
        for i in range(start, min(rows, start + INSERT_CHUNK)):
            created = t0 + timedelta(milliseconds=i)
            chunk.append({
                "id": f"bench-{i:08d}", "pipeline_id": pipeline.id,
                "pipeline_name": "bench-b" if i % 3 == 0 else "bench",
                "step_id": step.id, "step_name": "bench", "deployment_id": deployment.id,
                "deployment_name": "bench", "execution_rule": "endpoint",
                "status": "succeeded" if i % 10 else "failed", "shadow": i % 7 == 0,
                "inputs": [{"pipeline_input_name": "text", "value": f"input {i}"}],
                "outputs": [{"pipeline_output_name": "score", "value": (i % 100) / 100}],
                "created_at": created, "ended_at": created + timedelta(milliseconds=5),
                "validation_failures": ["high"] if i % 100 > 90 else None})
        async with state.transactions() as session:
            await session.execute(insert(Execution), chunk)
    return deployment


async def _export(state: Any, deployment: Any, fmt: str) -> dict[str, Any]:
    from gristmill_platform.deployments.export import ExportRequest, export_executions

    before = _maxrss_mb()
    started = time.perf_counter()
    rows = await export_executions(state.transactions, state.datastore, deployment,
                                   ExportRequest(f"exports/bench.{fmt}", fmt, None, None))
    seconds = time.perf_counter() - started
    return {"format": fmt, "rows": rows, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds), "maxrss_before_mb": round(before, 1),
            "maxrss_after_mb": round(_maxrss_mb(), 1)}


async def main_async(rows: int, formats: list[str]) -> dict[str, Any]:
    from gristmill_platform.app import build_state
    from gristmill_platform.db import migrate
    from gristmill_platform.settings import Settings

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-export-") as scratch:
        data_dir = Path(scratch)
        settings = Settings(data_dir=data_dir).resolve()
        assert settings.database_url
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
        state = build_state(settings)
        started = time.perf_counter()
        deployment = await _fill(state, rows)
        fill_s = time.perf_counter() - started
        print(f"inserted {rows} executions in {fill_s:.1f} s; "
              f"maxrss {_maxrss_mb():.0f} MB before exporting", flush=True)
        results = []
        for fmt in formats:
            result = await _export(state, deployment, fmt)
            print(json.dumps(result), flush=True)
            results.append(result)
        await state.engine.dispose()
    return {"rows": rows, "batch": 5_000, "database": "sqlite", "results": results,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "when": datetime.now(UTC).isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="parquet,jsonl")
    args = parser.parse_args()
    report = asyncio.run(main_async(args.rows, args.formats.split(",")))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
