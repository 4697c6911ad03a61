"""What one SQLite read costs through the control service's engine: on the event loop
(db/sqlite_cursor.py LoopReader, the default) against aiosqlite's thread (the path every
read took before), with SQLAlchemy on a plain sqlite3 connection as the floor.

A table of 1,000 rows; N reads by primary key on one open connection, in rounds taken in
turns; the CPU time of the whole process (process_time: every thread's) per read, and the
wall time. The thread path is the same engine with the loop's reader turned off
(sqlite_cursor.is_read answering no). Writes bench/results/sqlite_read.json.

    .venv/bin/python bench/sqlite_read.py [--reads 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy
import uvloop
from sqlalchemy import text

from gristmill_platform.db import sqlite_cursor
from gristmill_platform.db.engine import create_engine

RESULTS = Path(__file__).parent / "results" / "sqlite_read.json"
ROWS = 1000
QUERY = text("SELECT name, status FROM steps WHERE id = :id")


def prepare(path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TABLE steps (id TEXT PRIMARY KEY, name TEXT, status TEXT, body TEXT)"))
        connection.execute(text("INSERT INTO steps VALUES (:id, :name, 'ready', :body)"),
                           [{"id": f"step-{i}", "name": f"name-{i}", "body": "x" * 200}
                            for i in range(ROWS)])
    engine.dispose()


def measured(reads: int, one: Callable[[int], Any]) -> tuple[float, float]:
    """(CPU µs, wall µs) per read of ``one`` (sync)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(reads):
        one(i)
    return ((time.process_time() - cpu) / reads * 1e6,
            (time.perf_counter() - wall) / reads * 1e6)


async def measured_async(reads: int, one: Callable[[int], Awaitable[Any]]
                         ) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(reads):
        await one(i)
    return ((time.process_time() - cpu) / reads * 1e6,
            (time.perf_counter() - wall) / reads * 1e6)


async def run(path: Path, reads: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {
        mode: {"cpu_us": [], "wall_us": []} for mode in ("loop", "thread", "sync_floor")}
    engine = create_engine(f"sqlite:///{path}")
    sync_engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    reading = sqlite_cursor.is_read
    try:
        async with engine.connect() as connection:
            async def read(i: int) -> Any:
                result = await connection.execute(QUERY, {"id": f"step-{i % ROWS}"})
                return result.one()

            with sync_engine.connect() as plain:
                def read_plain(i: int) -> Any:
                    return plain.execute(QUERY, {"id": f"step-{i % ROWS}"}).one()

                for _ in range(2):  # warm-up: statement caches, the loop's reader
                    await measured_async(200, read)
                    measured(200, read_plain)
                for _ in range(rounds):
                    for mode in ("loop", "thread", "sync_floor"):
                        if mode == "sync_floor":
                            cpu, wall = measured(reads, read_plain)
                        else:
                            sqlite_cursor.is_read = (  # type: ignore[assignment]
                                reading if mode == "loop" else (lambda operation: False))
                            try:
                                cpu, wall = await measured_async(reads, read)
                            finally:
                                sqlite_cursor.is_read = reading  # type: ignore[assignment]
                        samples[mode]["cpu_us"].append(cpu)
                        samples[mode]["wall_us"].append(wall)
    finally:
        await engine.dispose()
        sync_engine.dispose()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "read.sqlite3"
        prepare(path)
        samples = uvloop.run(run(path, args.reads, args.rounds))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "sqlalchemy": sqlalchemy.__version__},
        "method": {"reads": args.reads, "rounds": args.rounds, "rows": ROWS},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(f"one SELECT by key, {args.reads} reads x {args.rounds} rounds, median of rounds")
    print(f"{'':<12}{'CPU us':>9}{'wall us':>10}")
    for mode, values in samples.items():
        cpu = round(statistics.median(values["cpu_us"]), 1)
        wall = round(statistics.median(values["wall_us"]), 1)
        results[mode] = {"cpu_us_per_read": cpu, "wall_us_per_read": wall, "rounds": values}
        print(f"{mode:<12}{cpu:>9}{wall:>10}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
