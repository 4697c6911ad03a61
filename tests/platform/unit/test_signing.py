from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

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


# -- what mutation testing showed untested -------------------------------------------------

KEY = b"k" * 32


def _refusal(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(SignatureError) as caught:
        call()
    return str(caught.value), caught.value.code


def test_signature_covers_a_canonical_string_of_operation_and_sorted_params() -> None:
    # Pinned so the format cannot drift without a failing test: a change would invalidate
    # every URL already handed out, and a looser format could make two targets collide.
    params = signer.sign("get", {"path": "a/b", "size": "3"}, ttl_s=60, now=1000)
    expected = hmac.new(KEY, b"get\nexpires=1060&path=a/b&size=3", hashlib.sha256).hexdigest()
    assert params == {"path": "a/b", "size": "3", "expires": "1060", "signature": expected}


def test_sign_and_verify_default_to_the_current_clock() -> None:
    before = int(time.time())
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60)
    assert before + 60 <= int(params["expires"]) <= int(time.time()) + 60
    signer.verify("get", params)
    old = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    assert _refusal(lambda: signer.verify("get", old)) == ("The URL has expired", "AccessDenied")


def test_url_is_valid_through_its_expiry_second_and_not_after() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    signer.verify("get", params, now=1060)
    assert _refusal(lambda: signer.verify("get", params, now=1060.001)) == (
        "The URL has expired", "AccessDenied")


@pytest.mark.parametrize("dropped", ["signature", "expires"])
def test_url_missing_only_its_signature_or_only_its_expiry_is_refused(dropped: str) -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    del params[dropped]
    assert _refusal(lambda: signer.verify("get", params, now=1001)) == (
        "The URL is not signed", "AccessDenied")


def test_signature_of_a_tampered_url_names_the_mismatch() -> None:
    params = signer.sign("get", {"path": "a/b"}, ttl_s=60, now=1000)
    assert _refusal(lambda: signer.verify("get", {**params, "path": "a/c"}, now=1001)) == (
        "The URL signature does not match", "SignatureDoesNotMatch")


def test_malformed_expiry_with_a_valid_signature_is_refused() -> None:
    # The signer itself would never issue it; a leaked key or a bug could.
    params = {"path": "a/b", "expires": "soon"}
    params["signature"] = signer.signature("get", params)
    assert _refusal(lambda: signer.verify("get", params, now=1001)) == (
        "The URL expiry is malformed", "AccessDenied")


def _policy(document: object) -> dict[str, str]:
    """Fields of an upload form whose (possibly malformed) policy carries a valid signature."""
    raw = json.dumps(document).encode() if not isinstance(document, bytes) else document
    policy = base64.b64encode(raw).decode()
    return {"key": "dir/f.bin", "policy": policy,
            "x-gristmill-signature": signer.signature("post-policy", {"policy": policy})}


def test_post_policy_document_is_pinned() -> None:
    fields = signer.post_policy(key="dir/f.bin", max_size=123, ttl_s=60, now=1000)
    assert base64.b64decode(fields["policy"]) == (
        b'{"expiration":1060,"conditions":[{"key":"dir/f.bin"},'
        b'["content-length-range",0,123]]}')
    assert fields["key"] == "dir/f.bin"
    assert fields["x-gristmill-signature"] == signer.signature(
        "post-policy", {"policy": fields["policy"]})


def test_post_policy_defaults_to_the_current_clock() -> None:
    before = int(time.time())
    fields = signer.post_policy(key="k", max_size=1, ttl_s=60)
    expiration = json.loads(base64.b64decode(fields["policy"]))["expiration"]
    assert before + 60 <= expiration <= int(time.time()) + 60
    assert signer.verify_post_policy(fields) == ("k", 1)
    old = signer.post_policy(key="k", max_size=1, ttl_s=60, now=1000)
    assert _refusal(lambda: signer.verify_post_policy(old)) == (
        "The upload policy has expired", "AccessDenied")


def test_a_well_formed_policy_that_was_not_signed_is_refused() -> None:
    # Same key, a larger size limit and a later expiry, under the old signature: without
    # the signature check anyone could upload anything anywhere.
    fields = signer.post_policy(key="dir/f.bin", max_size=10, ttl_s=60, now=1000)
    forged = _policy({"expiration": 9_999_999_999,
                      "conditions": [{"key": "dir/f.bin"}, ["content-length-range", 0, 10**12]]})
    forged["x-gristmill-signature"] = fields["x-gristmill-signature"]
    assert _refusal(lambda: signer.verify_post_policy(forged, now=1001)) == (
        "The policy signature does not match", "SignatureDoesNotMatch")


@pytest.mark.parametrize("document", [
    b"not json",
    b"\xff\xfe",
    {"conditions": [{"key": "dir/f.bin"}, ["content-length-range", 0, 5]]},
    {"expiration": "later", "conditions": [{"key": "dir/f.bin"},
                                           ["content-length-range", 0, 5]]},
    {"expiration": 2000},
    {"expiration": 2000, "conditions": [["content-length-range", 0, 5]]},
    {"expiration": 2000, "conditions": [{"key": "dir/f.bin"}]},
    {"expiration": 2000, "conditions": [{"key": "dir/f.bin"}, ["content-length-range", 0, "x"]]},
    {"expiration": 2000, "conditions": [{"path": "dir/f.bin"}, ["content-length-range", 0, 5]]},
    {"expiration": 2000, "conditions": [{"key": "dir/f.bin"}, ["content-length-range", 0]]},
    {"expiration": 2000, "conditions": [{"key": "dir/f.bin"}, ["other-range", 0, 5]]},
])
def test_malformed_policy_with_a_valid_signature_is_refused(document: object) -> None:
    fields = _policy(document)
    assert _refusal(lambda: signer.verify_post_policy(fields, now=1001)) == (
        "The policy document is malformed", "InvalidPolicyDocument")


def test_policy_that_is_not_base64_is_malformed() -> None:
    policy = "not base64!"
    fields = {"key": "k", "policy": policy,
              "x-gristmill-signature": signer.signature("post-policy", {"policy": policy})}
    assert _refusal(lambda: signer.verify_post_policy(fields, now=1001)) == (
        "The policy document is malformed", "InvalidPolicyDocument")


def test_policy_base64_is_decoded_strictly() -> None:
    # A lenient decoder skips foreign characters, so two different strings would carry
    # one document; only the exact encoding the signer produced is accepted.
    good = signer.post_policy(key="dir/f.bin", max_size=5, ttl_s=60, now=1000)["policy"]
    policy = good[:8] + "*" + good[8:]
    fields = {"key": "dir/f.bin", "policy": policy,
              "x-gristmill-signature": signer.signature("post-policy", {"policy": policy})}
    assert _refusal(lambda: signer.verify_post_policy(fields, now=1001)) == (
        "The policy document is malformed", "InvalidPolicyDocument")


def test_policy_reads_the_size_from_the_content_length_range_condition() -> None:
    fields = _policy({"expiration": 2000, "conditions": [
        ["starts-with", "$key", "dir/"], {"key": "dir/f.bin"}, ["content-length-range", 0, 77]]})
    assert signer.verify_post_policy(fields, now=1001) == ("dir/f.bin", 77)


def test_policy_is_valid_through_its_expiry_second_and_not_after() -> None:
    fields = signer.post_policy(key="dir/f.bin", max_size=5, ttl_s=60, now=1000)
    assert signer.verify_post_policy(fields, now=1060) == ("dir/f.bin", 5)
    assert _refusal(lambda: signer.verify_post_policy(fields, now=1060.001)) == (
        "The upload policy has expired", "AccessDenied")


@pytest.mark.parametrize("dropped", ["key", "policy", "x-gristmill-signature"])
def test_upload_form_missing_one_field_is_refused(dropped: str) -> None:
    fields = signer.post_policy(key="dir/f.bin", max_size=5, ttl_s=60, now=1000)
    del fields[dropped]
    assert _refusal(lambda: signer.verify_post_policy(fields, now=1001)) == (
        "The upload form lacks its key, policy or signature", "InvalidPolicyDocument")


def test_upload_form_with_an_empty_key_is_checked_against_the_policy() -> None:
    # An empty key is present (not missing): the policy decides, and it names another key.
    fields = signer.post_policy(key="dir/f.bin", max_size=5, ttl_s=60, now=1000)
    assert _refusal(lambda: signer.verify_post_policy({**fields, "key": ""}, now=1001)) == (
        "The form's key does not match the policy", "AccessDenied")
