"""A pipeline's logs as craft-ai-sdk 0.74 reads them (get_pipeline_logs): the lines of its
build, which is where a pipeline created from code can fail before it ever runs (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gristmill_platform.db.models.steps import Step
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions.service import from_unix_ms
from gristmill_platform.http.dates import iso

MAX_LIMIT = 100_000


@dataclass(frozen=True)
class LogWindow:
    start: datetime | None = None
    end: datetime | None = None
    limit: int | None = None


def log_window(body: Mapping[str, Any]) -> LogWindow:
    """`{from?, to?, limit?}` (epoch milliseconds, a count), or the 400 to answer."""
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= MAX_LIMIT):
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return LogWindow(from_unix_ms(body.get("from"), "from"),
                     from_unix_ms(body.get("to"), "to"), limit)


def build_log_lines(step: Step, window: LogWindow) -> list[dict[str, Any]]:
    """The build's lines, all stamped with the time the build last wrote (lines carry no
    time of their own). With a limit, the last lines: the end of a build says why it
    failed."""
    stamp = step.updated_at
    if (window.start is not None and stamp < window.start) or (
            window.end is not None and stamp > window.end):
        return []
    lines = step.build_log.splitlines()
    if window.limit is not None:
        lines = lines[-window.limit:]
    when = iso(stamp)
    return [{"timestamp": when, "message": line} for line in lines]
