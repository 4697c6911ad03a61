"""Each request's check (deps.current_principal): an access token whose signature or
expiry fails is refused before any database connection is taken, so garbage sent to the
API costs no connection from the pool; a good one reads its SDK token's standing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from gristmill_platform.auth.repository import TokenStanding
from gristmill_platform.auth.tokens import encode_access_token
from gristmill_platform.deps import current_principal
from gristmill_platform.errors import Unauthorized

KEY = "k" * 48


class State:
    def __init__(self, standing: TokenStanding | None) -> None:
        self.settings = SimpleNamespace(secret_key=KEY)
        self.transactions = SimpleNamespace(read=self.read)
        self.standing = standing
        self.connections = 0
        self.token_ids: list[str | None] = []  # what each read was said to be about

    async def read(self, read: Any, key: str, *, token_id: str | None = None) -> Any:
        self.connections += 1
        self.token_ids.append(token_id)
        assert read.parameters(key) == {"token_id": key}
        # the columns of auth.repository's standing query, in its order
        return read.shape(None if self.standing is None else tuple(self.standing))


def standing(revoked_at: datetime | None = None) -> TokenStanding:
    return TokenStanding(revoked_at=revoked_at, user_id="u-1", is_admin=False,
                         is_viewer=False)


def request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/api/v1/users/me",
                    "root_path": "", "query_string": b"", "path_params": {},
                    "headers": [(b"authorization", f"Bearer {token}".encode())]})


def token(*, ttl_s: int = 600, key: str = KEY) -> str:
    return encode_access_token(key=key, user_id="u-1", token_id="t-1", scope="user",
                               execution_id=None, ttl_s=ttl_s)[0]


@pytest.mark.parametrize("bad", [
    "not-a-jwt", token(key="x" * 48), token(ttl_s=-10)], ids=["garbage", "forged", "expired"])
def test_a_bad_token_takes_no_connection(bad: str) -> None:
    state = State(standing())
    with pytest.raises(Unauthorized):
        asyncio.run(current_principal(request(bad), state))  # type: ignore[arg-type]
    assert state.connections == 0


def test_a_good_token_reads_its_standing_once() -> None:
    state = State(standing())
    principal = asyncio.run(current_principal(request(token()), state))  # type: ignore[arg-type]
    assert (principal.user_id, principal.token_id, state.connections) == ("u-1", "t-1", 1)
    # about that token's row only: the journal's barrier runs only if it holds it
    assert state.token_ids == ["t-1"]


def test_a_revoked_token_is_refused_after_its_read() -> None:
    state = State(standing(revoked_at=datetime.now(UTC)))
    with pytest.raises(Unauthorized, match="revoked"):
        asyncio.run(current_principal(request(token()), state))  # type: ignore[arg-type]
    assert state.connections == 1
