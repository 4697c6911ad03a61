"""Admission control (executions/admission.py): at most `capacity` run, the rest wait in
arrival order, a full queue is refused with 503 and Retry-After, and nothing admitted is
dropped."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gristmill_platform.executions.admission import (
    ElasticAdmission,
    QueueFull,
    available_memory,
    default_capacity,
)


def test_default_capacity_follows_memory_between_two_per_cpu_and_32() -> None:
    assert default_capacity(2, 8 * 1024**3) == 16  # one per 512 MiB
    assert default_capacity(2, 64 * 1024**3) == 32  # at most 32
    assert default_capacity(64, 64 * 1024**3) == 32
    assert default_capacity(8, 2 * 1024**3) == 16  # at least two per CPU
    assert default_capacity(2, 100 * 1024**2) == 4
    assert default_capacity(None, None) == 2
    assert default_capacity(1, None) == 2


def test_available_memory_reads_memavailable(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1048576 kB\n"
                       "MemAvailable:    8388608 kB\n")
    assert available_memory(meminfo) == 8 * 1024**3
    # no MemAvailable line (or no /proc): the machine's physical memory
    meminfo.write_text("MemTotal:       25165824 kB\n")
    assert available_memory(meminfo) == os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES")
    assert available_memory(tmp_path / "missing") == available_memory(meminfo)


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
