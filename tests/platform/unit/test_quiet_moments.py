"""Background work on the endpoint hot path: it waits for a moment with no warm call in
flight (traffic.py), and caches are reloaded ahead of their expiry (db/refresh.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gristmill_platform.db.refresh import BackgroundReloads, Freshness, freshness
from gristmill_platform.traffic import Traffic


@pytest.mark.parametrize(("age", "expected"), [
    (0.0, Freshness.FRESH), (0.5, Freshness.FRESH), (0.51, Freshness.AHEAD),
    (1.0, Freshness.AHEAD), (1.01, Freshness.STALE), (60.0, Freshness.STALE)])
def test_freshness(age: float, expected: Freshness) -> None:
    assert freshness(age, 1.0) is expected


def test_quiet_returns_at_once_with_no_call_in_flight() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        await asyncio.wait_for(traffic.quiet(10), 1)

    asyncio.run(scenario())


def test_quiet_waits_for_the_calls_in_flight() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        traffic.enter()
        traffic.enter()
        waiting = asyncio.get_running_loop().create_task(traffic.quiet(10))
        await asyncio.sleep(0.05)
        traffic.leave()
        await asyncio.sleep(0.05)
        assert not waiting.done()  # one call still in flight
        traffic.leave()
        await asyncio.wait_for(waiting, 1)
        assert traffic.in_flight == 0

    asyncio.run(scenario())


def test_quiet_gives_up_after_its_longest_wait() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        traffic.enter()  # a load that never stops
        await asyncio.wait_for(traffic.quiet(0.05), 1)

    asyncio.run(scenario())


def test_quiet_for_counts_from_the_last_call_answered() -> None:
    traffic = Traffic()
    traffic.enter()
    traffic.enter()
    assert traffic.quiet_for() == 0.0
    traffic.leave()
    assert traffic.quiet_for() == 0.0  # one still in flight
    traffic.leave()
    first = traffic.quiet_for()
    assert 0.0 < first < 1.0
    assert traffic.quiet_for() >= first  # it grows until the next call


def test_paused_waits_for_a_pause_of_the_calls_not_a_moment_between_two() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        traffic.enter()
        waiting = asyncio.get_running_loop().create_task(traffic.paused(0.5, 30))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # a call in flight
        traffic.leave()
        await asyncio.sleep(0.05)
        assert not waiting.done()  # answered, but not yet a pause
        traffic.enter()  # the next call: the pause starts again after it
        await asyncio.sleep(0.3)
        traffic.leave()
        await asyncio.sleep(0.3)
        assert not waiting.done()  # 0.3 s since that call, 0.6 s since the first
        await asyncio.wait_for(waiting, 5)
        assert traffic.quiet_for() >= 0.5

    asyncio.run(scenario())


def test_paused_gives_up_after_its_longest_wait() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        traffic.enter()  # a load that never stops
        await asyncio.wait_for(traffic.paused(0.05, 0.1), 2)
        traffic.leave()
        await asyncio.wait_for(traffic.paused(60, 0.1), 2)  # a pause never long enough
        await asyncio.wait_for(traffic.paused(0.05, -1), 2)  # overdue already

    asyncio.run(scenario())


def test_one_background_reload_per_key_after_the_calls_in_flight() -> None:
    async def scenario() -> None:
        traffic = Traffic()
        reloads = BackgroundReloads(traffic)
        done: list[str] = []

        async def reload() -> None:
            done.append("x")

        traffic.enter()
        reloads.start("a", reload)
        reloads.start("a", reload)  # already under way: not twice
        await asyncio.sleep(0.02)
        assert done == []  # a call is in flight
        traffic.leave()
        await asyncio.sleep(0.02)
        assert done == ["x"]
        reloads.start("a", reload)  # the earlier one is over: a new one may start
        await asyncio.sleep(0.02)
        assert done == ["x", "x"]

    asyncio.run(scenario())


def test_a_failed_background_reload_is_logged_and_forgotten(caplog) -> None:
    async def scenario() -> None:
        reloads = BackgroundReloads(Traffic())

        async def broken() -> None:
            raise RuntimeError("database gone")

        reloads.start("a", broken)
        await asyncio.sleep(0.02)
        reloads.start("a", broken)  # not stuck as "under way"
        await asyncio.sleep(0.02)

    asyncio.run(scenario())
    assert caplog.text.count("background reload of 'a' failed") == 2


def test_the_service_process_freezes_its_start_up_heap(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from gristmill_platform.app import create_app
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    settings = resolve_settings(Settings(data_dir=tmp_path / "env"))
    prepare_environment(settings)
    gc.unfreeze()
    try:
        # Some CPython builds hold a few hundred objects in the permanent generation of
        # their own (3.12.1 here: 375 at start, back after unfreeze once a module loads),
        # so the test compares orders of magnitude, not counts.
        with TestClient(create_app(settings)):
            left_alone = gc.get_freeze_count()  # tests and embedders: nothing frozen
        with TestClient(create_app(settings, freeze_heap=True)):
            frozen = gc.get_freeze_count()  # the start-up heap: the app, the ORM, pydantic
        assert left_alone < 1_000 and frozen > 50_000, (left_alone, frozen)
    finally:
        gc.unfreeze()
