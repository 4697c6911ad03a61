"""Execution context read by craft-ai-sdk code running inside a Gristmill step.

craft-ai-sdk's get_execution_id() imports this module by the name
__craft_internal_execution_context and reads current_execution_id; the Gristmill runner sets
it before calling the step function.
"""

import contextvars

current_execution_id: "contextvars.ContextVar[str]" = contextvars.ContextVar(
    "current_execution_id"
)
