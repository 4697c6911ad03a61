"""What the periodic check of local warm workers decides (executors/following.py), from the
versions the pool holds and the generations in the database. End to end, with two control
service processes: tests/platform/test_rollout_replicas.py."""

from __future__ import annotations

from gristmill_platform.executors.following import judge
from gristmill_platform.executors.workers import behind, node_key, variant_key


def test_a_deployment_missing_from_the_database_stops_with_its_variants() -> None:
    held = {"ep": {("id-1", 2)}, variant_key("ep", "challenger"): {("id-1", 2)},
            "other": {("id-2", 1)}}
    assert judge(held, {"id-2": 1}) == (["ep"], [])


def test_a_newer_generation_rolls_own_and_node_pools_but_not_variants() -> None:
    held = {"ep": {("id-1", 1)}, variant_key("ep", "challenger"): {("id-1", 1)},
            node_key("graph", "scale"): {("id-3", 4)}, "same": {("id-2", 7)}}
    gone, rolls = judge(held, {"id-1": 2, "id-2": 7, "id-3": 5})
    assert gone == []
    # the variant rolls at its next call, which also compares its pipeline
    assert rolls == ["ep", node_key("graph", "scale")]


def test_a_roll_under_way_is_not_started_again() -> None:
    # the old worker serves while the new one starts: both versions are held
    assert judge({"ep": {("id-1", 1), ("id-1", 2)}}, {"id-1": 2}) == ([], [])


def test_a_deployment_created_again_under_its_name() -> None:
    # workers of the deleted one only: they stop (a call to the new one adopts it)
    assert judge({"ep": {("old", 3)}}, {}) == (["ep"], [])
    # a call already rolled them to the new one: nothing stops, nothing starts again
    assert judge({"ep": {("old", 3), ("new", 1)}}, {"new": 1}) == ([], [])


def test_a_call_is_behind_on_another_id_or_an_older_generation() -> None:
    assert behind({("id-1", 1)}, "id-1", 2)
    assert behind({("id-1", 2), ("id-1", 1)}, "id-1", 2)  # the old one still serves
    assert behind({("old", 5)}, "new", 1)
    assert not behind({("id-1", 2)}, "id-1", 2)
    assert not behind({("id-1", 3)}, "id-1", 2)  # what the call read is older
    assert not behind(set(), "id-1", 2)  # none held here: the call brings them up


def test_the_check_reads_without_waiting_for_the_journal() -> None:
    """Every interval: a plain session, not a transaction whose barrier writes what the
    execution journal holds (on the event loop, between warm calls)."""
    import asyncio
    from contextlib import asynccontextmanager
    from typing import Any

    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.executors.following import WorkerFollowing

    barriers: list[int] = []

    async def barrier() -> None:
        barriers.append(1)

    @asynccontextmanager
    async def session_factory() -> Any:
        yield object()

    class Deployments:
        def __init__(self, session: object) -> None:
            pass

        async def generations(self, ids: set[str]) -> dict[str, int]:
            return {deployment_id: 1 for deployment_id in ids}

    class Pool:
        def deployment_names(self) -> list[str]:
            return ["ep"]

        def versions(self, key: str) -> set[tuple[str, int]]:
            return {("id-1", 1)}

    transactions = Transactions(session_factory)  # type: ignore[arg-type]
    transactions.barrier = barrier
    following = WorkerFollowing(Pool(), transactions, Deployments,  # type: ignore[arg-type]
                                interval_s=1.0)
    asyncio.run(following.check())
    assert barriers == []


def test_the_check_waits_for_a_moment_with_no_warm_call(monkeypatch) -> None:
    import asyncio

    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.executors import following as following_module
    from gristmill_platform.traffic import Traffic

    monkeypatch.setattr(following_module, "QUIET_WAIT_S", 60.0)

    async def scenario() -> None:
        checked = asyncio.Event()

        class Pool:
            def deployment_names(self) -> list[str]:
                checked.set()
                return []

        traffic = Traffic()
        traffic.enter()  # a warm call in flight
        following = following_module.WorkerFollowing(
            Pool(), Transactions(None),  # type: ignore[arg-type]
            None, interval_s=0.001, traffic=traffic)  # type: ignore[arg-type]
        following.start()
        for _ in range(50):  # many intervals
            await asyncio.sleep(0.001)
        assert not checked.is_set()
        traffic.leave()
        await asyncio.wait_for(checked.wait(), 10)
        await following.shutdown()

    asyncio.run(scenario())
