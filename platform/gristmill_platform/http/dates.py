"""Dates on the wire: ISO 8601 in UTC with milliseconds and a Z, as the clients expect."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import overload


@overload
def iso(value: datetime) -> str: ...


@overload
def iso(value: None) -> None: ...


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def http_date(value: datetime) -> str:
    """An HTTP date (RFC 9110's IMF-fixdate: "Mon, 07 Dec 2026 03:00:00 GMT") of an aware
    datetime, in English whatever the locale: strftime's %a and %b follow LC_TIME."""
    return format_datetime(value.astimezone(UTC), usegmt=True)
