"""The one place an execution's status may change (pure)."""

from __future__ import annotations

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "pending", "running", "succeeded", "failed", "cancelled")
ACTIVE = frozenset({PENDING, RUNNING})

_ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({RUNNING, FAILED, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

DISPLAY = {PENDING: "Pending", RUNNING: "Running", SUCCEEDED: "Succeeded", FAILED: "Failed",
           CANCELLED: "Cancelled"}


class InvalidTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"an execution cannot go from {current} to {target}")


def can_transition(current: str, target: str) -> bool:
    return target in _ALLOWED.get(current, frozenset())


def transition(current: str, target: str) -> str:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
    return target
