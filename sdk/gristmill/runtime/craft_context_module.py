"""The top-level ``__craft_internal_execution_context`` module, for the runtime site folder.

craft-ai-sdk looks the execution id up with ``import __craft_internal_execution_context``: a
top-level name, which a package cannot provide. The platform writes this file next to the
``gristmill`` package in the folder that every step environment has on ``sys.path``. The
runner also aliases ``gristmill.runtime._craft_context`` under that name when the file is
missing (a step image with the SDK pip-installed), so the text below must stay identical to
that module (a test checks it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MODULE_NAME = "__craft_internal_execution_context"

SOURCE = '''"""Execution context read by craft-ai-sdk code running inside a Gristmill step.

craft-ai-sdk's get_execution_id() imports this module by the name
__craft_internal_execution_context and reads current_execution_id; the Gristmill runner sets
it before calling the step function.
"""

import contextvars

current_execution_id: "contextvars.ContextVar[str]" = contextvars.ContextVar(
    "current_execution_id"
)
'''


def install_craft_context_module(folder: Path) -> Path:
    """Write ``__craft_internal_execution_context.py`` into ``folder``; return its path.

    Written to a temporary name first and renamed: a step starting at that moment either
    finds the whole file or none (then the runner's alias stands in).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{MODULE_NAME}.py"
    if target.is_file() and target.read_text(encoding="utf-8") == SOURCE:
        return target
    fd, scratch = tempfile.mkstemp(dir=folder, prefix=f".{MODULE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(SOURCE)
        os.chmod(scratch, 0o644)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return target
