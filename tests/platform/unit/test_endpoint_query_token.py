"""The endpoint token of a URL's query (?token=), read the same on the fast path and on
the routes."""

from __future__ import annotations

import pytest

from gristmill_platform.deployments.gateway import query_token


@pytest.mark.parametrize(("query", "token"), [
    (b"token=a+b/c=", "a+b/c="),        # the 0.74 client sends a chosen token unencoded
    (b"token=a%2Bb%2Fc%3D", "a+b/c="),  # a client that encodes it
    (b"x=1&token=first&token=last", "last"),  # the last one, as Starlette's query_params
    (b"%74oken=t", "t"),
    (b"token=", ""),
    (b"token", ""),
    (b"tokens=t", None),
    (b"", None),
])
def test_the_token_keeps_its_plus_signs(query: bytes, token: str | None) -> None:
    assert query_token({"query_string": query}) == token
