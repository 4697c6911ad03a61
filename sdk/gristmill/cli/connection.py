"""The environment the API commands talk to: only through its HTTP API, configured like
the SDK (``GRISTMILL_ENVIRONMENT_URL``/``GRISTMILL_SDK_TOKEN`` or the ``CRAFT_AI_*`` ones).
These commands never open a data directory, so they work the same against a remote
environment and never create one by accident."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gristmill.cli.output import fail
from gristmill.client import Gristmill
from gristmill.errors import GristmillError

HOW_TO_CONFIGURE = (
    "set GRISTMILL_ENVIRONMENT_URL and GRISTMILL_SDK_TOKEN (for a local environment: "
    "source <data dir>/credentials.env, or create a token with `gristmill token create`)"
)


@contextmanager
def connected() -> Iterator[Gristmill]:
    """A client for the configured environment; configuration and API errors, and those
    of the local files a command is given, end the command with their message (exit
    code 1), never a traceback."""
    try:
        client = Gristmill(progress=False)
    except ValueError as exc:
        raise fail(f"{exc}\nTo configure the CLI, {HOW_TO_CONFIGURE}.") from None
    try:
        with client:
            yield client
    except GristmillError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # a local file or folder a command was given (upload, download)
        raise fail(str(exc)) from None
