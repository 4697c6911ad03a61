"""The queue of shadow copies waiting to be sent (executions/shadow_queue.py)."""

from __future__ import annotations

from gristmill_platform.executions.shadow_queue import ShadowQueue


def one_place(_: str) -> int:
    return 1


def test_a_copy_waits_for_a_free_place_of_its_workers() -> None:
    queue: ShadowQueue[str] = ShadowQueue()
    for item in ("a1", "a2"):
        assert queue.offer("a", item, limit=10)
    assert queue.take(one_place) == ("a", "a1")
    assert queue.in_flight("a") == 1
    assert queue.take(one_place) is None  # a's one place is taken
    queue.ended("a")
    assert queue.take(one_place) == ("a", "a2")
    queue.ended("a")
    assert len(queue) == 0 and queue.in_flight("a") == 0


def test_keys_take_turns_so_a_busy_one_holds_back_only_its_own() -> None:
    queue: ShadowQueue[str] = ShadowQueue()
    for key, item in (("slow", "s1"), ("slow", "s2"), ("fast", "f1"), ("fast", "f2")):
        queue.offer(key, item, limit=10)
    assert queue.take(one_place) == ("slow", "s1")
    assert queue.take(one_place) == ("fast", "f1")  # slow is busy: fast goes on
    queue.ended("fast")
    assert queue.take(one_place) == ("fast", "f2")
    assert queue.take(one_place) is None
    queue.ended("slow")
    assert queue.take(one_place) == ("slow", "s2")


def test_places_come_from_the_oldest_copy_and_turns_rotate() -> None:
    queue: ShadowQueue[str] = ShadowQueue()
    for key, item in (("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")):
        queue.offer(key, item, limit=10)

    def two_places(_: str) -> int:
        return 2

    taken = [queue.take(two_places) for _ in range(4)]
    assert taken == [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")]
    assert queue.take(two_places) is None and len(queue) == 0


def test_past_the_limit_nothing_is_queued() -> None:
    queue: ShadowQueue[str] = ShadowQueue()
    assert queue.offer("a", "a1", limit=2) and queue.offer("b", "b1", limit=2)
    assert not queue.offer("a", "a2", limit=2)
    assert len(queue) == 2
    assert [queue.take(one_place), queue.take(one_place), queue.take(one_place)] == [
        ("a", "a1"), ("b", "b1"), None]
