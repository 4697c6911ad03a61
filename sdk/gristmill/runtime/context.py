"""The execution the current code runs for, as the SDK reads it.

A context variable rather than a global so that a warm worker running several executions at
once (the runner's server mode) can tell them apart; the runner sets it before calling the
step function, and ``asyncio`` tasks inherit it.
"""

from __future__ import annotations

import contextvars

current_execution_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_execution_id"
)
