"""The local executor stops a worker that runs past its spec's timeout_s (a deployment's
execution_timeout_s), with a reason that says so; one that ends in time is untouched."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from gristmill_platform.executors.base import LogLine
from gristmill_platform.executors.local import LocalExecutor
from gristmill_platform.executors.spec import FailureCode, LaunchSpec, PollResult, WorkerState


def spec(execution_id: str, seconds: float, timeout_s: int | None) -> LaunchSpec:
    return LaunchSpec(execution_id=execution_id, step_name="", pipeline_name="", language="",
                      argv=(sys.executable, "-c", f"import time; time.sleep({seconds})"),
                      env={}, timeout_s=timeout_s)


async def test_deadline_stops_the_worker(tmp_path: Path) -> None:
    ended: dict[str, PollResult] = {}
    done = asyncio.Event()

    async def on_exit(execution_id: str, outcome: PollResult, tail: Sequence[LogLine]) -> None:
        ended[execution_id] = outcome
        if len(ended) == 2:
            done.set()

    executor = LocalExecutor(tmp_path, on_exit)
    try:
        await executor.submit(spec("slow", 60, timeout_s=1))
        await executor.submit(spec("quick", 0, timeout_s=30))
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await executor.shutdown()
    assert ended["quick"].state == WorkerState.SUCCEEDED
    slow = ended["slow"]
    assert slow.state == WorkerState.FAILED and slow.code == FailureCode.DEADLINE_EXCEEDED
    assert slow.reason == "The execution ran longer than its timeout (1 s) and was stopped."
