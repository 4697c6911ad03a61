from __future__ import annotations

import pytest

from gristmill_platform.datastore.signing import SignatureError, UrlSigner

signer = UrlSigner(key=b"k" * 32)


def test_signed_params_verify() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    signer.verify("get", params, now=1059)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"path": "a/c"}, "SignatureDoesNotMatch"),
        ({"expires": "999999999"}, "SignatureDoesNotMatch"),
        ({"signature": "0" * 64}, "SignatureDoesNotMatch"),
    ],
)
def test_tampering_is_detected(change: dict[str, str], code: str) -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    with pytest.raises(SignatureError) as caught:
        signer.verify("get", {**params, **change}, now=1001)
    assert caught.value.code == code


def test_expired_url_is_refused() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    with pytest.raises(SignatureError, match="expired"):
        signer.verify("get", params, now=1061)


def test_signature_is_bound_to_the_operation() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    with pytest.raises(SignatureError):
        signer.verify("put-part", params, now=1001)


def test_unsigned_url_is_refused() -> None:
    with pytest.raises(SignatureError, match="not signed"):
        signer.verify("get", {"path": "a/b"}, now=1)


def test_other_key_does_not_verify() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    with pytest.raises(SignatureError):
        UrlSigner(key=b"z" * 32).verify("get", params, now=1001)


def test_post_policy_round_trip_and_key_binding() -> None:
    fields = signer.post_policy(key="dir/f.bin", max_size=123, ttl_s=60, now=1000)
    assert signer.verify_post_policy(fields, now=1030) == ("dir/f.bin", 123)
    with pytest.raises(SignatureError, match="key does not match"):
        signer.verify_post_policy({**fields, "key": "other"}, now=1030)
    with pytest.raises(SignatureError, match="expired"):
        signer.verify_post_policy(fields, now=1061)
    with pytest.raises(SignatureError):
        signer.verify_post_policy({**fields, "policy": fields["policy"][:-4] + "AAAA"}, now=1030)
    with pytest.raises(SignatureError, match="lacks"):
        signer.verify_post_policy({"key": "dir/f.bin"}, now=1030)
