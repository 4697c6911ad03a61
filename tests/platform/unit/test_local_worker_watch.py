"""The local warm-worker pool's watch of a worker that exited (executors/local_workers.py):
it waits a moment for the worker's last output, and must stop when the pool cancels it
then, not carry on as if the worker had crashed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gristmill_platform.executors.local_workers import LocalWorkerPool
from gristmill_platform.timeouts import within


class _Exited:
    async def wait(self) -> int:
        return 0


def _pool(tmp_path: Path) -> LocalWorkerPool:
    # _watch only uses the pool's own state: nothing here reaches a database or a build
    none = cast(Any, None)
    return LocalWorkerPool(none, none, none, none, data_dir=tmp_path,
                           environment_url="http://127.0.0.1:1")


async def _never() -> None:
    await asyncio.Event().wait()


def _worker() -> Any:
    return SimpleNamespace(process=_Exited(), exited=asyncio.Event(), returncode=None,
                           stopping=True, status="running")


async def test_a_watch_cancelled_while_it_waits_for_the_last_output_stops(
        tmp_path: Path) -> None:
    pool, worker = _pool(tmp_path), _worker()
    # a process the step started holds the pipe open: the output never ends
    reader = asyncio.get_running_loop().create_task(_never())
    watch = asyncio.get_running_loop().create_task(
        pool._watch(cast(Any, None), worker, reader))
    await asyncio.sleep(0.05)  # inside the bounded wait for the reader
    watch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watch
    assert not worker.exited.is_set()  # it did not go on to judge the exit
    assert not reader.done()  # the reader is not the watch's to cancel
    reader.cancel()


async def test_a_reader_cancelled_meanwhile_does_not_stop_the_watch(tmp_path: Path) -> None:
    pool, worker = _pool(tmp_path), _worker()
    reader = asyncio.get_running_loop().create_task(_never())
    watch = asyncio.get_running_loop().create_task(
        pool._watch(cast(Any, None), worker, reader))
    await asyncio.sleep(0.05)
    reader.cancel()
    await watch
    assert worker.exited.is_set()
    assert worker.returncode == 0


async def test_a_reader_that_never_ends_holds_the_watch_half_a_second_at_most(
        tmp_path: Path) -> None:
    pool, worker = _pool(tmp_path), _worker()
    reader = asyncio.get_running_loop().create_task(_never())
    await within(pool._watch(cast(Any, None), worker, reader), 5)
    assert worker.exited.is_set()
    assert not reader.done()
    reader.cancel()
