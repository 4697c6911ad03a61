"""The embedded resource sampler's own CPU cost, as a percentage of one core.

Twenty worker processes (half asleep, half waking every 100 ms for ~5 ms of work, each
holding 20 MiB) are tracked the way the control service tracks local workers. This process
then runs only the sampling machinery on an asyncio loop, writing to a SQLite database
(WAL, as `gristmill up` does), and its CPU time (every thread: the loop, the reading
thread, SQLite) over the run is the cost:

  sampler          the 5 s sampler alone: host + 20 processes (and their descendants)
                   read, 21 rows written per tick
  sampler+tracker  as deployed: plus the usage tracker's own readings of each worker
                   (its main process, at most once a second per worker)

    .venv/bin/python bench/resource_sampler.py [--seconds 60] [--workers 20] [--interval 5]

Writes bench/results/resource_sampler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.db.models.resources import ResourceSample
from gristmill_platform.resources.probes import HostProbe
from gristmill_platform.resources.sampler import ResourceSampler
from gristmill_platform.resources.usage import UsageTracker

RESULTS = Path(__file__).parent / "results" / "resource_sampler.json"
WORKER = """
import sys, time
block = b"w" * (20 * 1024 * 1024)
busy = sys.argv[1] == "busy"
while True:
    if busy:
        end = time.perf_counter() + 0.005
        while time.perf_counter() < end:
            pass
    time.sleep(0.1 if busy else 1.0)
"""


def spawn_workers(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", WORKER, "busy" if i % 2 else "sleep"])
            for i in range(count)]


async def measure(phase: str, seconds: float, interval: float,
                  workers: list[subprocess.Popen[bytes]], data_dir: Path,
                  with_tracker: bool) -> dict[str, Any]:
    url = f"sqlite:///{data_dir / f'{phase}.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    factory = create_session_factory(engine)

    @asynccontextmanager
    async def transaction() -> AsyncIterator[AsyncSession]:
        async with factory() as session, session.begin():
            yield session

    async def record(execution_id: str, usage: dict[str, Any]) -> None:
        return None

    tracker = UsageTracker(record)
    for index, worker in enumerate(workers):
        tracker.worker_started(f"bench-execution-{index:02d}", worker.pid)
    sampler = ResourceSampler(session_scope=transaction, host_name=platform.node() or "host",
                              probe=HostProbe(data_dir), tracker=tracker,
                              interval_s=interval, retention_s=24 * 3600)
    # warm up (imports, first connection, psutil caches) before measuring
    await sampler.tick()
    await asyncio.sleep(min(5.0, seconds / 10))

    cpu0, wall0 = time.process_time(), time.monotonic()
    if with_tracker:
        tracker.start()
    sampler.start()
    await asyncio.sleep(seconds)
    await sampler.shutdown()
    await tracker.shutdown()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0

    async with transaction() as session:
        rows = (await session.execute(select(func.count()).select_from(ResourceSample))
                ).scalar_one()
    await engine.dispose()
    ticks = sampler.ticks - 1
    return {
        "phase": phase,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 4),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
        "ticks": ticks,
        "cpu_ms_per_tick": round(1000 * cpu / max(1, ticks), 2),
        "rows_written": rows,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workers = spawn_workers(args.workers)
    try:
        await asyncio.sleep(1.0)  # let them allocate
        with tempfile.TemporaryDirectory() as tmp:
            phases = [
                await measure("sampler", args.seconds, args.interval, workers, Path(tmp),
                              with_tracker=False),
                await measure("sampler+tracker", args.seconds, args.interval, workers,
                              Path(tmp), with_tracker=True),
            ]
    finally:
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.wait()
    return {
        "benchmark": "resource_sampler",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "interval_s": args.interval,
        "workers": args.workers,
        "seconds_per_phase": args.seconds,
        "machine": {"cpus": psutil.cpu_count(), "processes": len(psutil.pids()),
                    "python": platform.python_version(), "platform": platform.platform()},
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    os.environ.setdefault("GRISTMILL_LOG_LEVEL", "warning")
    result = asyncio.run(main_async(args))
    for phase in result["phases"]:
        print(f"{phase['phase']:>16}: {phase['cpu_percent_of_one_core']:.3f} % of one core "
              f"({phase['cpu_s']:.3f} s CPU in {phase['wall_s']:.0f} s, "
              f"{phase['ticks']} ticks, {phase['cpu_ms_per_tick']:.1f} ms CPU per tick, "
              f"{phase['rows_written']} rows)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
