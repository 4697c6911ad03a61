from __future__ import annotations

import base64
import hashlib
import re
import time
from datetime import timedelta

import jwt
import pytest

from gristmill_platform.auth.tokens import (
    MAX_SDK_TOKEN_DAYS,
    AccessClaims,
    InvalidToken,
    decode_access_token,
    encode_access_token,
    new_sdk_token,
    sdk_token_lifetime_allowed,
    secret_matches,
    split_sdk_token,
)

KEY = "s" * 48


@pytest.fixture(autouse=True)
def no_verified_tokens_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no token verified: one test's tokens (the same claims sign to
    the same string) must not answer for another's."""
    from gristmill_platform.auth import tokens
    monkeypatch.setattr(tokens, "_verified", {})


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


# -- what mutation testing showed untested -------------------------------------------------

def test_sdk_token_shape_length_and_entropy() -> None:
    token = new_sdk_token()
    prefix, token_id, secret = token.plaintext.split("_", 2)
    assert (prefix, token_id) == ("gm", token.token_id)
    # 8 random bytes of id (hex) and 32 of secret (URL-safe base64, unpadded): 256 bits
    assert re.fullmatch(r"[0-9a-f]{16}", token_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    # the whole secret (it may hold underscores itself): 50 tokens, 50 secrets
    assert len({new_sdk_token().plaintext.split("_", 2)[2] for _ in range(50)}) == 50


def test_split_keeps_underscores_of_the_secret_and_ignores_surrounding_space() -> None:
    assert split_sdk_token("  gm_abc_se_cr_et\n") == ("abc", "se_cr_et")


@pytest.mark.parametrize("bad", ["gm_id_", "gm_id", "gm__", "GM_id_secret", "gm-id-secret"])
def test_sdk_token_with_an_empty_part_or_another_prefix_is_refused(bad: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        split_sdk_token(bad)
    assert str(caught.value) == "Invalid SDK token: not a Gristmill SDK token"


def test_access_token_claims_are_pinned() -> None:
    token, expires = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                         execution_id=None, ttl_s=600, now=1_700_000_000.9)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="gristmill",
                        options={"verify_exp": False})
    jti = claims.pop("jti")
    assert claims == {"sub": "u", "tid": "t", "scope": "user", "iat": 1_700_000_000,
                      "exp": 1_700_000_600, "aud": "gristmill"}
    assert expires == 1_700_000_600
    assert re.fullmatch(r"[0-9a-f]{32}", jti)


def test_access_token_defaults_to_the_current_clock() -> None:
    before = int(time.time())
    token, expires = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                         execution_id=None, ttl_s=600)
    assert before + 600 <= expires <= int(time.time()) + 600
    assert decode_access_token(token, key=KEY).expires_at == expires


def test_execution_token_carries_its_execution_id() -> None:
    token, expires = encode_access_token(key=KEY, user_id="u", token_id="t", scope="execution",
                                         execution_id="exec-1", ttl_s=600, now=1000)
    assert jwt.decode(token, options={"verify_signature": False})["execution_id"] == "exec-1"
    assert decode_access_token(token, key=KEY, now=1001) == AccessClaims(
        user_id="u", token_id="t", scope="execution", execution_id="exec-1",
        expires_at=expires)
    plain, _ = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                   execution_id=None, ttl_s=600, now=1000)
    assert "execution_id" not in jwt.decode(plain, options={"verify_signature": False})
    assert decode_access_token(plain, key=KEY, now=1001).execution_id is None


def test_access_token_is_valid_until_the_second_before_its_expiry() -> None:
    token, expires = encode_access_token(key=KEY, user_id="u", token_id="t", scope="user",
                                         execution_id=None, ttl_s=60, now=1000)
    assert decode_access_token(token, key=KEY, now=expires - 0.001).expires_at == 1060
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key=KEY, now=expires)
    assert str(caught.value) == "Access token expired: refresh it with your SDK token"


def _signed(claims: dict[str, object]) -> str:
    return jwt.encode({"aud": "gristmill", **claims}, KEY, algorithm="HS256")


@pytest.mark.parametrize("dropped", ["exp", "iat", "sub", "tid"])
def test_access_token_lacking_a_required_claim_is_refused(dropped: str) -> None:
    claims: dict[str, object] = {"sub": "u", "tid": "t", "iat": 1000, "exp": 2000}
    del claims[dropped]
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(_signed(claims), key=KEY, now=1001)
    assert str(caught.value) == "Invalid access token"


@pytest.mark.parametrize("claims", [
    {"aud": "someone-else"},
    {"aud": None},
])
def test_access_token_for_another_audience_is_refused(claims: dict[str, object]) -> None:
    base: dict[str, object] = {"sub": "u", "tid": "t", "iat": 1000, "exp": 2000}
    token = jwt.encode({**base, **claims} if claims["aud"] else base, KEY, algorithm="HS256")
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key=KEY, now=1001)
    assert str(caught.value) == "Invalid access token"


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_access_token_with_another_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "u", "tid": "t", "iat": 1000, "exp": 2000, "aud": "gristmill"},
                       KEY, algorithm="HS512")
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key=KEY, now=1001)
    assert str(caught.value) == "Invalid access token"


def test_access_token_without_scope_is_a_user_token() -> None:
    claims = decode_access_token(_signed({"sub": "u", "tid": "t", "iat": 1000, "exp": 2000}),
                                 key=KEY, now=1001)
    assert claims == AccessClaims(user_id="u", token_id="t", scope="user", execution_id=None,
                                  expires_at=2000)


def test_access_token_with_a_non_integer_expiry_is_refused() -> None:
    token = _signed({"sub": "u", "tid": "t", "iat": 1000, "exp": 9_999_999_999.5})
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key=KEY, now=1001)
    assert str(caught.value) == "Access token expired: refresh it with your SDK token"


# -- verified tokens are kept (auth/tokens.py: decode_access_token) --

def _user_token(key: str = KEY, *, ttl_s: int = 60, now: float = 1000) -> str:
    token, _ = encode_access_token(key=key, user_id="u", token_id="t", scope="user",
                                   execution_id="e", ttl_s=ttl_s, now=now)
    return token


def test_a_verified_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _user_token()
    first = decode_access_token(token, key=KEY, now=1001)
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("verified again"))
    assert decode_access_token(token, key=KEY, now=1002) == first == AccessClaims(
        user_id="u", token_id="t", scope="user", execution_id="e", expires_at=1060)


def test_a_kept_token_still_expires() -> None:
    token = _user_token()
    assert decode_access_token(token, key=KEY, now=1059.9).expires_at == 1060
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key=KEY, now=1060)
    assert str(caught.value) == "Access token expired: refresh it with your SDK token"
    # and stays expired: what is kept is the signature's proof, not a verdict
    with pytest.raises(InvalidToken):
        decode_access_token(token, key=KEY, now=1061)


def test_a_token_kept_under_one_key_is_refused_under_another() -> None:
    token = _user_token()
    decode_access_token(token, key=KEY, now=1001)
    with pytest.raises(InvalidToken) as caught:
        decode_access_token(token, key="k" * 48, now=1001)
    assert str(caught.value) == "Invalid access token"


def test_the_key_and_the_token_are_not_confused_in_the_fingerprint() -> None:
    # ("ab", "c") and ("a", "bc") concatenate alike; the length prefix tells them apart
    from gristmill_platform.auth.tokens import _fingerprint
    assert _fingerprint("c", "ab") != _fingerprint("bc", "a")
    assert _fingerprint("c", "ab") == _fingerprint("c", "ab")


def test_a_refused_token_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from gristmill_platform.auth import tokens
    token = _user_token()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            decode_access_token(forged, key=KEY, now=1001)
    assert tokens._verified == {}


def test_at_most_so_many_tokens_are_kept_the_oldest_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gristmill_platform.auth import tokens
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    issued = [_user_token(now=1000 + i) for i in range(4)]
    for token in issued:
        decode_access_token(token, key=KEY, now=1001)
    assert len(tokens._verified) == 3
    assert tokens._fingerprint(issued[0], KEY) not in tokens._verified
    assert all(tokens._fingerprint(t, KEY) in tokens._verified for t in issued[1:])
    assert tokens.VERIFIED_CACHE_SIZE == 3


def test_the_default_bound_is_a_few_thousand_tokens() -> None:
    from gristmill_platform.auth import tokens
    assert tokens.VERIFIED_CACHE_SIZE == 4096


@pytest.mark.parametrize(("lifetime", "allowed"), [
    (timedelta(0), False),
    (timedelta(seconds=-1), False),
    (timedelta(seconds=1), True),
    (timedelta(days=3650), True),
    (timedelta(days=3650, microseconds=1), False),
    (timedelta(days=999_999_999), False),
])
def test_an_sdk_token_lives_more_than_nothing_and_at_most_ten_years(
        lifetime: timedelta, allowed: bool) -> None:
    assert MAX_SDK_TOKEN_DAYS == 3650
    assert sdk_token_lifetime_allowed(lifetime) is allowed
