"""What craft-ai-sdk 0.74 lets a caller choose for a deployment: the endpoint's URL path,
its token, and how long an execution may run (pure)."""

from __future__ import annotations

import re

from gristmill_platform.deployments.rules import InvalidDeployment

URL_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# token68 characters (RFC 7235): the token travels in `Authorization: EndpointToken <t>`
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 256
MAX_EXECUTION_TIMEOUT_S = 7 * 24 * 3600
# how long a deployment's creation may take (and a warm worker drain): a day is far
# beyond any; unbounded, a value past the database's integers was a 500
MAX_CREATION_TIMEOUT_S = 24 * 3600
DEFAULT_CREATION_TIMEOUT_S = 180


def endpoint_url_path(value: object, rule: str, name: str) -> str | None:
    """Where the endpoint answers (/endpoints/<path>): the caller's path, else its name;
    None for a periodic deployment."""
    if rule != "endpoint":
        if value is not None:
            raise InvalidDeployment("endpoint_url_path only applies to endpoint deployments")
        return None
    if value is None:
        return name
    if not isinstance(value, str) or not URL_PATH.fullmatch(value):
        raise InvalidDeployment(
            f"Invalid endpoint_url_path {value!r}: use 1 to 100 letters, digits, '-' or '_', "
            "starting with a letter or digit (it is one segment of /endpoints/<path>)")
    return value


def chosen_endpoint_token(value: object, rule: str) -> str | None:
    """The caller's endpoint token, or None for a random one."""
    if value is None:
        return None
    if rule != "endpoint":
        raise InvalidDeployment("endpoint_token only applies to endpoint deployments")
    if (not isinstance(value, str) or not MIN_TOKEN_LENGTH <= len(value) <= MAX_TOKEN_LENGTH
            or not TOKEN.fullmatch(value)):
        raise InvalidDeployment(
            f"endpoint_token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters among "
            "letters, digits and . _ ~ + / = - (leave it out for a random token)",
            name="InvalidEndpointToken")
    return value


def creation_timeout(value: object) -> int:
    """timeout_s: how long the deployment's creation may take, in whole seconds."""
    if isinstance(value, bool) or not isinstance(value, int) or not (
            1 <= value <= MAX_CREATION_TIMEOUT_S):
        raise InvalidDeployment(f"timeout_s must be an integer number of seconds from 1 to "
                                f"{MAX_CREATION_TIMEOUT_S}")
    return value


def execution_timeout(value: object) -> int | None:
    """execution_timeout_s: a whole number of seconds, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not (
            1 <= value <= MAX_EXECUTION_TIMEOUT_S):
        raise InvalidDeployment(f"execution_timeout_s must be an integer number of seconds "
                                f"from 1 to {MAX_EXECUTION_TIMEOUT_S}")
    return value
