"""A request that waits for a warm worker to come up (a deployment's update, its creation)
while a newer start of the same slot cancels that bring-up (the deployment's follower or a
call rolling at once) waits for the newer one: it used to end with the cancellation, a 500
for the update (seen in test_rollout's variant workers test, about one run in eight)."""

from __future__ import annotations

import asyncio

import pytest

from gristmill_platform.executors.local_workers import _Slot, _wait_for_bring_up


async def _until(event: asyncio.Event) -> None:
    await event.wait()


def _slot_bringing_up() -> tuple[_Slot, asyncio.Task[None]]:
    """A slot whose bring-up is in progress (and never ends on its own)."""
    slot = _Slot("d")
    task = asyncio.get_running_loop().create_task(_until(asyncio.Event()))
    slot.bring_up = task
    return slot, task


async def _waiting_for(slot: _Slot, task: asyncio.Task[None]) -> asyncio.Task[None]:
    """A request waiting (up to 30 s) for that bring-up, once it has started waiting."""
    waiting = asyncio.get_running_loop().create_task(_wait_for_bring_up(slot, task, 30))
    await asyncio.sleep(0.01)
    return waiting


async def test_a_superseded_bring_up_is_followed_by_the_wait() -> None:
    slot, first = _slot_bringing_up()
    second_up = asyncio.Event()
    waiting = await _waiting_for(slot, first)
    # a newer start: _launch cancels the bring-up in progress and starts its own
    first.cancel()
    second = asyncio.get_running_loop().create_task(_until(second_up))
    slot.bring_up = second
    await asyncio.sleep(0.01)
    assert not waiting.done()  # waits for the newer one, without raising
    second_up.set()
    await asyncio.wait_for(waiting, 5)
    assert second.done() and not second.cancelled()


async def test_a_stopped_slot_ends_the_wait() -> None:
    slot, first = _slot_bringing_up()
    waiting = await _waiting_for(slot, first)
    first.cancel()  # stop(): its bring-up cancelled, nothing newer
    slot.bring_up = None
    await asyncio.wait_for(waiting, 5)


async def test_the_wait_ends_after_wait_s_without_stopping_the_bring_up() -> None:
    slot, task = _slot_bringing_up()
    await asyncio.wait_for(_wait_for_bring_up(slot, task, 0.05), 5)
    assert not task.done()
    task.cancel()


async def test_cancelling_the_caller_still_cancels_it() -> None:
    slot, task = _slot_bringing_up()
    waiting = await _waiting_for(slot, task)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not task.done()  # shielded: the bring-up goes on
    task.cancel()
