"""Names of steps, pipelines, deployments and their inputs/outputs (pure)."""

from __future__ import annotations

import keyword
import re

from gristmill_platform.errors import BadRequest

# Names travel unescaped in URL paths (contract §0.1): keep them to a URL-safe set.
RESOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
# Inputs become keyword arguments of the step function.
IO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def validate_resource_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not RESOURCE_NAME.match(name):
        raise BadRequest(
            f"Invalid {kind} name {name!r}: use 1 to 100 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def validate_io_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not IO_NAME.match(name) or keyword.iskeyword(name):
        raise BadRequest(
            f"Invalid {kind} name {name!r}: it becomes a Python argument name, so use "
            "letters, digits and '_', not starting with a digit, and not a Python keyword"
        )
    return name
