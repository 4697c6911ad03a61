"""Gristmill control service."""

from gristmill.service_requirements import service_python_problem

__version__ = "0.1.0"

# said plainly here, before a module of this package fails to import on an older Python
_problem = service_python_problem()
if _problem is not None:
    raise ImportError(_problem)
