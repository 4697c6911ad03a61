"""The period asked for (``start``/``end`` in epoch milliseconds) and the step the answer
is given at.

Points are at ``start``, ``start + step``, ... up to ``end`` (as Prometheus' range queries
and the documentation's example: a 2-minute period gave 5 points, 30 s apart). A point's
value describes the step that ends at it. The step is the smallest "round" duration that
keeps the answer under MAX_POINTS points per series and is no finer than the source can
resolve (the embedded sampler's interval, Prometheus' scrape interval)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gristmill_platform.errors import BadRequest

MAX_RANGE_DAYS = 31
MAX_RANGE_MS = MAX_RANGE_DAYS * 86_400_000
MAX_POINTS = 240
NICE_STEPS_S: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                                 7200, 10800, 21600, 43200, 86400)
# epoch ms beyond this is no date (year 9999): a sign of seconds*1e6 or garbage
MAX_EPOCH_MS = 253_402_300_799_999


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int
    step_ms: int

    def timestamps(self) -> list[int]:
        count = (self.end_ms - self.start_ms) // self.step_ms + 1
        return [self.start_ms + k * self.step_ms for k in range(count)]

    @property
    def last_ms(self) -> int:
        return self.start_ms + (self.end_ms - self.start_ms) // self.step_ms * self.step_ms


def choose_step_ms(span_ms: int, min_step_s: float) -> int:
    """The smallest round step >= min_step_s giving at most MAX_POINTS points."""
    wanted_s = max(min_step_s, span_ms / 1000 / (MAX_POINTS - 1))
    for step in NICE_STEPS_S:
        if step >= wanted_s:
            return step * 1000
    return math.ceil(wanted_s) * 1000


def parse_epoch_ms(name: str, raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        raise BadRequest(f"Missing query parameter '{name}': the {_role(name)} of the period, "
                         "in milliseconds since the epoch (e.g. "
                         f"{name}=1707132918930)")
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"Query parameter '{name}' must be an integer number of milliseconds "
                         f"since the epoch, got {raw!r}") from None
    if not 0 <= value <= MAX_EPOCH_MS:
        raise BadRequest(f"Query parameter '{name}' is out of range ({value}): milliseconds "
                         "since the epoch, between 0 and year 9999")
    return value


def _role(name: str) -> str:
    return "beginning" if name == "start" else "end"


def parse_window(start: str | None, end: str | None, min_step_s: float) -> Window:
    start_ms = parse_epoch_ms("start", start)
    end_ms = parse_epoch_ms("end", end)
    if start_ms >= end_ms:
        raise BadRequest(f"'start' ({start_ms}) must be before 'end' ({end_ms})")
    if end_ms - start_ms > MAX_RANGE_MS:
        raise BadRequest(f"The period is too long ({(end_ms - start_ms) / 86_400_000:.1f} "
                         f"days): ask for at most {MAX_RANGE_DAYS} days at a time")
    return Window(start_ms, end_ms, choose_step_ms(end_ms - start_ms, min_step_s))


def parse_bool(name: str, raw: str | None, default: bool = False) -> bool:
    """``True``/``False`` in any case (the client sends Python's ``str(bool)``)."""
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"Query parameter '{name}' must be True or False, got {raw!r}")
