"""Which generation of craft-ai-sdk sent a request (its `craft-ai-client` header,
`craft-ai-sdk@<version>`), where the two generations Gristmill serves expect different
answers to the same route (docs/compatibility.md). Gristmill's own SDK and plain HTTP
clients get the answers of the documented contract."""

from __future__ import annotations

CLIENT_HEADER = "craft-ai-client"
CLIENT_PREFIX = "craft-ai-sdk@"
LEGACY_CLIENT_PREFIX = "craft-ai-sdk@0.50"


def is_legacy_client(client_header: str | None) -> bool:
    """craft-ai-sdk 0.50, the client the product documentation describes."""
    return bool(client_header and client_header.startswith(LEGACY_CLIENT_PREFIX))


def is_current_client(client_header: str | None) -> bool:
    """A craft-ai-sdk newer than 0.50 (0.74 is the one tested)."""
    return bool(client_header and client_header.startswith(CLIENT_PREFIX)
                and not is_legacy_client(client_header))
