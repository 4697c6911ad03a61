"""When the shadow copies waiting in the control service go to the shadow runner
(executions/shadow_runner.py; docs/rollout.md#shadow-runner). Pure: no clock, no I/O.

Copies yield to the calls. Measured on 2 CPUs: copies run beside a sequential caller's
calls (the runner at the idle CPU priority all the same) made the shadowed endpoint's p50
15 to 30 % slower than the plain one; the same copies run once the caller paused, 2.6 %
(bench/endpoints.py, docs/performance-log.md#rollout). So copies are released in a quiet moment
(no warm call in flight for a while), a chunk at a time, the next chunk once the runner
has run the last: a caller that comes back meets at most one chunk. Under traffic with no
such moment, they are released all the same once the oldest has waited max_delay_s (they
then run beside the calls, at the idle priority), or when too many wait, so that a busy
endpoint's copies are late, never lost."""

from __future__ import annotations

from dataclasses import dataclass

# Copies released in a quiet moment at a time: the most a caller coming back may meet
# (about 1.4 ms of CPU each for an echo step, measured).
CHUNK = 16
# This many copies waiting are released at once, quiet or not (one write stays small;
# the bound on everything waiting, here and in the runner, is the shadow queue's limit).
HIGH_WATER = 1024


@dataclass(frozen=True)
class Release:
    count: int  # copies to write to the runner now, oldest first
    # when to look again without news; None: when a copy comes or the runner accounts
    recheck_s: float | None


def release(*, waiting: int, oldest_wait_s: float, quiet_for_s: float, in_runner: int,
            quiet_s: float, max_delay_s: float) -> Release:
    """What to release of `waiting` copies, the oldest having waited oldest_wait_s, the
    service having had no warm call in flight for quiet_for_s (0 while one is), and
    in_runner copies written to the runner and not yet accounted for."""
    if waiting <= 0:
        return Release(0, None)
    if quiet_s <= 0 or oldest_wait_s >= max_delay_s or waiting >= HIGH_WATER:
        return Release(waiting, None)
    overdue_in = max_delay_s - oldest_wait_s
    if quiet_for_s < quiet_s:
        return Release(0, min(quiet_s - quiet_for_s, overdue_in))
    if in_runner:  # its accounts bring the next look; the delay stands meanwhile
        return Release(0, overdue_in)
    count = min(waiting, CHUNK)
    return Release(count, overdue_in if count < waiting else None)
