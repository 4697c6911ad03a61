"""Bounded waits that never lose the caller's cancellation (gristmill_platform/timeouts.py).

The first two tests build, turn by turn, the moments where Python 3.11's
``asyncio.wait_for`` loses a cancellation; the last runs a background loop the way the
build watch and the warm-worker pools do and stops it many times."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from gristmill_platform.timeouts import wait_event, within


async def test_a_cancellation_in_the_turn_the_inner_wait_ends_is_kept() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(within(event.wait(), 10))
    await asyncio.sleep(0)  # the waiter now waits on the event
    event.set()  # the inner wait ends on the next turn...
    waiter.cancel()  # ...the very turn the caller is cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiter  # wait_for on 3.11 returns True here


async def test_a_cancellation_in_the_turn_the_timeout_fires_is_kept() -> None:
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(within(asyncio.Event().wait(), 0.01))
    fired = loop.create_future()
    loop.call_later(0.01, lambda: (waiter.cancel(), fired.set_result(None)))
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await fired


async def test_a_timeout_cancels_the_inner_awaitable_and_lets_it_clean_up() -> None:
    cleaned = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    with pytest.raises(TimeoutError):
        await within(slow(), 0.01)
    assert cleaned == [True]


async def test_results_and_errors_pass_through() -> None:
    async def answer() -> int:
        return 42

    async def fails() -> None:
        raise ValueError("no")

    assert await within(answer(), 1) == 42
    with pytest.raises(ValueError, match="no"):
        await within(fails(), 1)
    assert await within(answer(), None) == 42


async def test_a_shielded_task_outlives_the_timeout() -> None:
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    task = asyncio.create_task(work())
    with pytest.raises(TimeoutError):
        await within(asyncio.shield(task), 0.01)
    assert not task.done()
    gate.set()
    assert await task == "done"


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.005, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # already set: no wait


async def test_a_polling_loop_always_stops_when_cancelled() -> None:
    """A loop waking on an event with a sub-millisecond timeout while another task sets the
    event at random, cancelled at random moments: with wait_for, a few in a thousand such
    loops ignore the cancellation and run on (measured on 3.11.7)."""
    rng = random.Random(7)

    async def poll(event: asyncio.Event) -> None:
        while True:
            await wait_event(event, 0.0005)
            event.clear()

    async def poke(event: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(rng.random() * 0.0007)
            event.set()

    ignored = 0
    for _ in range(400):
        event = asyncio.Event()
        loop_task = asyncio.create_task(poll(event))
        poker = asyncio.create_task(poke(event))
        await asyncio.sleep(rng.random() * 0.003)
        loop_task.cancel()
        done, _ = await asyncio.wait({loop_task}, timeout=1)
        if not done:
            ignored += 1
            loop_task.cancel()
            with contextlib.suppress(BaseException):
                await loop_task
        poker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poker
    assert ignored == 0


def test_the_control_service_never_uses_wait_for() -> None:
    """docs/development.md: bounded waits go through timeouts.within."""
    from pathlib import Path

    import gristmill_platform

    root = Path(gristmill_platform.__file__).parent
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if "wait_for(" in path.read_text() and path.name != "timeouts.py"]
    assert offenders == []
