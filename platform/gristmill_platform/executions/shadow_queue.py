"""Shadow copies of low-latency calls waiting to be sent (docs/rollout.md), per shadow
pipeline's warm workers (their pool key). Pure bookkeeping, no I/O.

A copy is only sent when its workers have a free place (their parallelism): the others
wait here, in order, rather than in the pool's line, where each would be sent the moment
the one before it answered, whatever the answering calls are doing. Keys take turns, so a
slow shadow pipeline holds back only its own copies."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class ShadowQueue(Generic[Item]):
    def __init__(self) -> None:
        self._waiting: dict[str, deque[Item]] = {}  # in turn order
        self._in_flight: dict[str, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def unended(self) -> int:
        """Copies waiting here or in flight (taken, not ended yet)."""
        return self._size + sum(self._in_flight.values())

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def offer(self, key: str, item: Item, limit: int) -> bool:
        """Queue a copy; False, and nothing queued, when `limit` copies (all keys together)
        wait already."""
        if self._size >= limit:
            return False
        self._waiting.setdefault(key, deque()).append(item)
        self._size += 1
        return True

    def take(self, places: Callable[[Item], int]) -> tuple[str, Item] | None:
        """The oldest copy of the first key, in turn, with fewer copies in flight than its
        workers' places (places(its oldest copy)); it counts as in flight until ended().
        That key then goes last in turn. None when every waiting key is full."""
        for key, waiting in self._waiting.items():
            if self.in_flight(key) < places(waiting[0]):
                item = waiting.popleft()
                del self._waiting[key]
                if waiting:
                    self._waiting[key] = waiting  # to the end of the turn
                self._size -= 1
                self._in_flight[key] = self.in_flight(key) + 1
                return key, item
        return None

    def ended(self, key: str) -> None:
        """A copy taken for key answered, failed or was not sent after all."""
        left = self.in_flight(key) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
