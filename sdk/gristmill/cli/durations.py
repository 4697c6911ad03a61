"""Human durations for command-line options (``30d``, ``12h``, ``90m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    match = _PATTERN.match(text.lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"Invalid duration {text!r}: use a positive number and a unit, e.g. 90m, 12h, 30d"
        )
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:  # beyond what a date can hold (about 2.7 million years)
        raise ValueError(f"Invalid duration {text!r}: too long") from None
