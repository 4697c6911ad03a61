"""The outputs long-poll reads the execution once before it waits and once when woken:
the wait's own first check is its only read before waiting (each read is a transaction,
and an elastic execution's client makes one long-poll). Its wake-up is registered before
that read, so an end committed right after it still wakes the poll at once. Woken with
the ending this process committed (a runner's finish), it reads nothing more."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.events import ExecutionEvents
from gristmill_platform.executions.repository import ExecutionOutcome
from gristmill_platform.executions.routes import execution_outputs


class FakeState:
    """What the route uses of the app state: transactions (the bare connections the
    outcome is read on), the events and the long-poll setting. Reads find `status` (the
    test changes it)."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.reads = 0
        self.events = ExecutionEvents()
        self.executions = SimpleNamespace(events=self.events)
        self.settings = SimpleNamespace(long_poll_s=5.0)
        self.transactions = SimpleNamespace(read=self.read)

    async def read(self, read: Any, key: str) -> Any:
        assert read.parameters(key) == {"execution_id": "e-1"}
        self.reads += 1
        return read.shape(("e-1", None, self.status, "", [
            {"pipeline_output_name": "text", "data_type": "string", "mapping_type": "direct",
             "value": "hi"}]))


async def poll(state: FakeState, **flags: bool) -> Any:
    request = SimpleNamespace(url="http://test/api/v1/executions/e-1/outputs")
    return await execution_outputs("e-1", request, state, None,  # type: ignore[arg-type]
                                   **flags)


def test_a_long_poll_that_waits_for_the_end_reads_twice() -> None:
    async def scenario() -> int:
        state = FakeState(t.RUNNING)
        task = asyncio.create_task(poll(state, wait_for_results=True))
        # registered for the wake-up: its reads before waiting are done (the fake's
        # reads do not suspend, nothing runs between the registration and the wait)
        while "e-1" not in state.events._waiters:
            await asyncio.sleep(0)
        state.status = t.SUCCEEDED  # the end is committed, and notified
        state.events.notify("e-1")
        body = await task
        assert body["outputs"][0]["value"] == "hi"
        return state.reads

    assert asyncio.run(scenario()) == 2


def test_a_long_poll_woken_with_the_ending_answers_from_it() -> None:
    ending = ExecutionOutcome("e-1", None, t.SUCCEEDED, None, [
        {"pipeline_output_name": "text", "data_type": "string", "mapping_type": "direct",
         "value": "from the finish"}])

    async def scenario() -> tuple[Any, int, ExecutionEvents]:
        state = FakeState(t.RUNNING)
        task = asyncio.create_task(poll(state, wait_for_results=True))
        while "e-1" not in state.events._waiters:
            await asyncio.sleep(0)
        state.events.notify("e-1", ending)
        return await task, state.reads, state.events

    body, reads, events = asyncio.run(scenario())
    assert body["outputs"][0]["value"] == "from the finish"
    assert reads == 1  # the one before waiting
    assert events.ended("e-1") is None  # kept only while someone waits


def test_an_ending_nobody_waits_for_is_not_kept() -> None:
    events = ExecutionEvents()
    events.notify("e-2", ExecutionOutcome("e-2", None, t.FAILED, "boom", []))
    assert events.ended("e-2") is None


@pytest.mark.parametrize("flags", [{}, {"wait_for_results": True},
                                   {"wait_for_completion": True}])
def test_an_ended_execution_is_read_once(flags: dict[str, bool]) -> None:
    state = FakeState(t.SUCCEEDED)
    body = asyncio.run(poll(state, **flags))
    assert body["outputs"][0]["pipeline_output_name"] == "text"
    assert state.reads == 1


def test_a_running_execution_without_waiting_is_answered_from_one_read() -> None:
    state = FakeState(t.RUNNING)
    asyncio.run(poll(state))
    assert state.reads == 1
