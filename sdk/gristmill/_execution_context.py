"""Which execution, if any, the current code runs in (contract §5.1).

The step runner sets a context variable (so that executions running side by side in one
warm worker keep their own id) and the execution's environment variables. Outside an
execution there is none, and metrics are not sent.
"""

from __future__ import annotations

import contextvars
import importlib
import os

EXECUTION_ID_VARS = ("GRISTMILL_EXECUTION_ID", "CRAFT_AI_EXECUTION_ID")
_RUNTIME_CONTEXT_MODULE = "gristmill.runtime.context"

# None: not looked up yet; False: the runtime is not installed.
_context_var: contextvars.ContextVar[str] | bool | None = None


def _runtime_context_var() -> contextvars.ContextVar[str] | None:
    global _context_var
    if _context_var is None:
        # Imported lazily: the runtime is optional and must not load with the client.
        try:
            module = importlib.import_module(_RUNTIME_CONTEXT_MODULE)
        except ImportError:
            _context_var = False
        else:
            var = getattr(module, "current_execution_id", None)
            _context_var = var if isinstance(var, contextvars.ContextVar) else False
    return _context_var if isinstance(_context_var, contextvars.ContextVar) else None


def current_execution_id() -> str | None:
    """The id of the execution this code runs in, or ``None`` outside one."""
    var = _runtime_context_var()
    if var is not None:
        try:
            value = var.get()
        except LookupError:
            value = None
        if value:
            return value
    for name in EXECUTION_ID_VARS:
        # Read at every call: a warm worker updates them between executions.
        value = os.environ.get(name)
        if value:
            return value
    return None
