"""Cron schedules (UTC), pure."""

from __future__ import annotations

from datetime import UTC, datetime

from cron_descriptor import Options, get_description
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

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
    for field, (label, names, span) in zip(cleaned.split(" "), _FIELDS, strict=True):
        step = _step_out_of_range(field, span)
        if step:
            item, value = step
            raise BadRequest(f"Invalid schedule {schedule!r}: the {label} step {value!r} in "
                             f"{item!r} is out of range; a {label} step is from 1 to {span}")
        inverted = _inverted_range(field, names)
        if inverted:
            raise BadRequest(f"Invalid schedule {schedule!r}: the {label} range {inverted!r} "
                             "runs backwards; write the smaller value first")
    try:
        next_fire(cleaned, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterBadDateError, CroniterBadCronError, ValueError, OverflowError):
        raise BadRequest(f"Invalid schedule {schedule!r}: it never fires (no such date, "
                         "e.g. 31 February)") from None
    return cleaned


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Each field: its name in messages, the names its values may have, and its span (its
# largest value less its smallest): a step is from 1 to the span, a larger one could only
# ever reach the first value (croniter takes any: */99999999999999999999 fired hourly, and
# read "Every 99999999999999999999 minutes").
_FIELDS: tuple[tuple[str, dict[str, int], int], ...] = (
    ("minute", {}, 59), ("hour", {}, 23), ("day-of-month", {}, 30),
    ("month", {name: i for i, name in enumerate(_MONTHS, start=1)}, 11),
    ("day-of-week", {name: i for i, name in enumerate(_DAYS)}, 6),
)


def _step_out_of_range(field: str, span: int) -> tuple[str, str] | None:
    """The first item of a cron field whose ``/step`` is not from 1 to ``span``, and
    that step, or None."""
    for item in field.split(","):
        _, slash, step = item.partition("/")
        # digits only (croniter checked); a long number is out of range, unread
        digits = step.lstrip("0")
        if slash and not (step.isdigit() and len(digits) <= 3
                          and 1 <= int(digits or "0") <= span):
            return item, step
    return None


def _inverted_range(field: str, names: dict[str, int]) -> str | None:
    """The first ``a-b`` item of a cron field with a > b (croniter reads it as a wrap
    around, which is rarely what was meant), or None."""
    for item in field.split(","):
        low, dash, high = item.split("/")[0].partition("-")
        if not dash:
            continue
        first, last = _value(low, names), _value(high, names)
        if first is not None and last is not None and first > last:
            return item
    return None


def _value(part: str, names: dict[str, int]) -> int | None:
    if part.isdigit():
        return int(part)
    return names.get(part.lower())


def human_readable(schedule: str) -> str:
    """The documented wording ('At 03:00 AM (UTC)'), whatever the service's locale: the
    library otherwise takes its language and its 12- or 24-hour clock from the locale
    (under C, the usual one in a container, 'At 03:00')."""
    options = Options(locale_code="en_US", use_24hour_time_format=False)
    return f"{get_description(schedule, options)} (UTC)"


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (UTC)."""
    base = after.astimezone(UTC)
    value = croniter(schedule, base).get_next(datetime)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
