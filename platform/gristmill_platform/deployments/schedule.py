"""Cron schedules (UTC), pure."""

from __future__ import annotations

from datetime import UTC, datetime

from cron_descriptor import get_description
from croniter import croniter

from gristmill_platform.errors import BadRequest


def validate_schedule(schedule: object) -> str:
    if not isinstance(schedule, str) or not schedule.strip():
        raise BadRequest("A periodic deployment needs a schedule: a cron expression such as "
                         "'0 3 * * *' (every day at 03:00 UTC)")
    cleaned = " ".join(schedule.split())
    if len(cleaned.split(" ")) != 5 or not croniter.is_valid(cleaned):
        raise BadRequest(f"Invalid schedule {schedule!r}: use 5 cron fields "
                         "(minute hour day-of-month month day-of-week), in UTC, e.g. "
                         "'*/15 * * * *'")
    return cleaned


def human_readable(schedule: str) -> str:
    return f"{get_description(schedule)} (UTC)"


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (UTC)."""
    base = after.astimezone(UTC)
    value = croniter(schedule, base).get_next(datetime)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
