"""What the control service (``gristmill_platform``) needs of the Python it runs on, in
the SDK so that it can be checked before that package is imported: on an older Python
the import fails deep inside (``datetime.UTC``, ``enum.StrEnum``) with a traceback that
does not say why. The SDK itself, its command line's client commands and the step
runtime work on Python 3.10 too (steps may name ``python:3.10-slim``)."""

from __future__ import annotations

import sys

SERVICE_MINIMUM_PYTHON = (3, 11)


def service_python_problem(version: tuple[int, ...] | None = None,
                           executable: str | None = None) -> str | None:
    """Why the control service cannot run on this Python; None when it can."""
    version = tuple(version or sys.version_info[:3])
    if version[:2] >= SERVICE_MINIMUM_PYTHON:
        return None
    minimum = ".".join(map(str, SERVICE_MINIMUM_PYTHON))
    return (f"Gristmill's control service needs Python {minimum} or newer; this is Python "
            f"{'.'.join(map(str, version))} ({executable or sys.executable}). The SDK and "
            "the command line's client commands work on it, not `gristmill up`. Make the "
            f"virtual environment with a newer Python, e.g. `PYTHON=python3.12 "
            "scripts/setup.sh` from the clone, or `python3.12 -m venv .venv`.")
