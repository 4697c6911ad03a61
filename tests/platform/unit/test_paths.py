from __future__ import annotations

import pytest

from gristmill_platform.datastore.paths import (
    InvalidPath,
    is_internal,
    validate_object_path,
    validate_user_path,
)


@pytest.mark.parametrize(
    "path",
    ["a.txt", "dir/sub/file.csv", "with space/é.bin", "x" * 1024, "a/.hidden", "a/..b/c"],
)
def test_accepts_reasonable_keys(path: str) -> None:
    assert validate_object_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("../secret", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\b", "separator"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("x" * 1025, "too long"),
        ("é" * 513, "too long"),  # the limit counts bytes, not characters
    ],
)
def test_rejects_unsafe_keys_with_a_reason(path: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        validate_object_path(path)
    assert reason in caught.value.message
    assert caught.value.status_code == 400


@pytest.mark.parametrize("path", [None, 7, b"a/b", ""])
def test_rejects_an_empty_or_non_string_path(path: object) -> None:
    with pytest.raises(InvalidPath) as caught:
        validate_object_path(path)  # type: ignore[arg-type]
    assert caught.value.message == "The object path is empty"
    assert (caught.value.status_code, caught.value.name) == (400, "InvalidPath")


def test_length_limit_is_in_bytes_and_inclusive() -> None:
    assert validate_object_path("ab", max_length=2) == "ab"
    with pytest.raises(InvalidPath) as caught:
        validate_object_path("é", max_length=1)
    assert caught.value.message == "The object path is too long (2 bytes, at most 1)"


@pytest.mark.parametrize(("path", "internal"), [
    (".gristmill", True), (".gristmill/steps/a.tgz", True), (".gristmill2/x", False),
    ("a/.gristmill/x", False), (".gristmil", False), ("gristmill/x", False),
])
def test_internal_prefix_is_a_whole_first_segment(path: str, internal: bool) -> None:
    assert is_internal(path) is internal


@pytest.mark.parametrize("path", [".gristmill", ".gristmill/steps/s/code.tgz"])
def test_a_users_path_may_not_name_the_platforms_own_files(path: str) -> None:
    assert validate_object_path(path) == path  # the platform's own writes take it
    with pytest.raises(InvalidPath) as caught:
        validate_user_path(path)
    assert "reserved for the platform's own files" in caught.value.message


@pytest.mark.parametrize("path", [".gristmills/a", "a/.gristmill/b", ".gristmill-x"])
def test_only_the_prefix_itself_is_reserved(path: str) -> None:
    assert validate_user_path(path) == path


def test_without_a_length_the_backend_checks_it() -> None:
    assert validate_user_path("x" * 5000, max_length=None) == "x" * 5000
    assert validate_user_path("x" * 1024) == "x" * 1024  # the default limit, inclusive
    with pytest.raises(InvalidPath):
        validate_user_path("x" * 1025)
