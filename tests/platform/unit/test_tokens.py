from __future__ import annotations

import jwt
import pytest

from gristmill_platform.auth.tokens import (
    InvalidToken,
    decode_access_token,
    encode_access_token,
    new_sdk_token,
    secret_matches,
    split_sdk_token,
)

KEY = "s" * 48


def test_sdk_token_is_random_and_only_its_hash_is_kept() -> None:
    first, second = new_sdk_token(), new_sdk_token()
    assert first.plaintext != second.plaintext
    token_id, secret = split_sdk_token(first.plaintext)
    assert token_id == first.token_id
    assert secret not in first.secret_hash
    assert secret_matches(secret, first.secret_hash)
    assert not secret_matches(secret + "x", first.secret_hash)


@pytest.mark.parametrize("bad", ["", "gm_", "gm_abc", "xx_abc_def", "gm__secret", "Bearer x"])
def test_malformed_sdk_tokens_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidToken):
        split_sdk_token(bad)


def test_access_token_has_numeric_exp_and_iat() -> None:
    token, expires = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                         execution_id=None, ttl_s=600, now=1_700_000_000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == expires == 1_700_000_600
    assert isinstance(claims["iat"], int)
    decoded = decode_access_token(token, key=KEY, now=1_700_000_100)
    assert (decoded.user_id, decoded.token_id, decoded.scope) == ("u", "t", "user")


def test_expired_access_token_is_refused_with_a_clear_message() -> None:
    token, _ = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                   execution_id=None, ttl_s=60, now=1000)
    with pytest.raises(InvalidToken, match="expired"):
        decode_access_token(token, key=KEY)


def test_forged_access_tokens_are_refused() -> None:
    token, _ = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                   execution_id=None, ttl_s=60)
    with pytest.raises(InvalidToken):
        decode_access_token(token, key="other" * 10)
    unsigned = jwt.encode({"sub": "u", "tid": "t", "exp": 9_999_999_999, "iat": 1},
                          key="", algorithm="none")
    with pytest.raises(InvalidToken):
        decode_access_token(unsigned, key=KEY)
