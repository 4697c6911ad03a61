"""Admission control (executions/admission.py): at most `capacity` run, the rest wait in
arrival order, a full queue is refused with 503 and Retry-After, and nothing admitted is
dropped."""

from __future__ import annotations

import asyncio

import pytest

from gristmill_platform.executions.admission import (
    ElasticAdmission,
    QueueFull,
    default_capacity,
)


def test_default_capacity_follows_cpus_and_memory() -> None:
    assert default_capacity(2, 64 * 1024**3) == 4
    assert default_capacity(8, 2 * 1024**3) == 4  # memory bounds it
    assert default_capacity(None, None) == 2
    assert default_capacity(1, 100 * 1024**2) == 1


def test_runs_at_most_capacity_and_starts_in_order() -> None:
    async def scenario() -> tuple[list[str], list[int]]:
        started: list[str] = []
        running_counts: list[int] = []
        admission: ElasticAdmission

        async def start(launch: str) -> None:
            started.append(launch)
            running_counts.append(admission.running)

        admission = ElasticAdmission(2, 100, start)
        for i in range(6):
            admission.admit(f"e{i}", f"e{i}")
        await asyncio.sleep(0)
        assert started == ["e0", "e1"] and admission.waiting == 4
        assert all(admission.holds(f"e{i}") for i in range(6))
        for i in range(6):
            admission.release(f"e{i}")
            await asyncio.sleep(0)
        return started, running_counts

    started, counts = asyncio.run(scenario())
    assert started == [f"e{i}" for i in range(6)]
    assert max(counts) <= 2


def test_a_full_queue_is_refused_with_retry_after() -> None:
    async def scenario() -> None:
        async def start(launch: str) -> None:
            await asyncio.sleep(3600)

        admission = ElasticAdmission(1, 2, start)
        for i in range(3):
            admission.check_room()
            admission.admit(f"e{i}", f"e{i}")
        with pytest.raises(QueueFull) as refused:
            admission.check_room()
        assert refused.value.status_code == 503
        assert refused.value.headers and int(refused.value.headers["Retry-After"]) >= 1
        # a waiting execution released (deleted) makes room, and is never started
        admission.release("e2")
        admission.check_room()
        await admission.shutdown()

    asyncio.run(scenario())


def test_admitting_twice_or_releasing_unknown_is_harmless() -> None:
    async def scenario() -> list[str]:
        started: list[str] = []

        async def start(launch: str) -> None:
            started.append(launch)

        admission = ElasticAdmission(1, 10, start)
        admission.admit("a", "a")
        admission.admit("a", "a")
        admission.release("nobody")
        await asyncio.sleep(0)
        return started

    assert asyncio.run(scenario()) == ["a"]


def test_a_cancelled_execution_leaves_the_queue_but_not_its_running_place() -> None:
    async def scenario() -> list[str]:
        started: list[str] = []

        async def start(launch: str) -> None:
            started.append(launch)

        admission = ElasticAdmission(1, 10, start)
        for name in ("a", "b", "c"):
            admission.admit(name, name)
        await asyncio.sleep(0)
        admission.withdraw("b")  # cancelled while it waited: never started
        assert not admission.holds("b") and admission.waiting == 1
        admission.withdraw("a")  # cancelled while it ran: its worker still holds the place
        await asyncio.sleep(0)
        assert admission.running == 1 and started == ["a"]
        admission.release("a")  # its worker is gone: the next one starts
        await asyncio.sleep(0)
        return started

    assert asyncio.run(scenario()) == ["a", "c"]
