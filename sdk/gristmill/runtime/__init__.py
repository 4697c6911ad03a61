"""The step runner: ``python -m gristmill.runtime run`` executes one step execution.

It runs inside every step environment, often before the step's own packages are warm, so
this package imports the standard library only; the SDK client (httpx, rich) stays out of
its import path. The contract it implements is docs/internals/runtime-protocol.md.
"""
