"""What every resource mixin may rely on: settings, the transport and URL builders."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gristmill._transport import Transport
from gristmill.config import Settings
from gristmill.errors import InvalidResponseError
from gristmill.progress import TransferProgress


def path_segment(value: str) -> str:
    """Escape a name for use as one URL path segment (craft-ai-sdk does not, and a ``/``
    in a name then reaches another route)."""
    return quote(str(value), safe="")


class ClientBase:
    _settings: Settings
    _transport: Transport

    def _api_url(self, path: str) -> str:
        return f"{self._settings.environment_api_url}{path}"

    def _control_api_url(self, path: str) -> str:
        return f"{self._settings.control_api_url}{path}"

    def _progress(self, description: str, total: int | None) -> TransferProgress:
        return TransferProgress(description, total, enabled=self._settings.progress)


def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidResponseError(
            f"Expected a JSON object from {what}, got {type(value).__name__}."
        )
    return value


def expect_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidResponseError(
            f"Expected a JSON array from {what}, got {type(value).__name__}."
        )
    return value


def expect_str(mapping: dict[str, Any], key: str, what: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidResponseError(f"{what} returned no '{key}'.")
    return value
