from __future__ import annotations

import pytest

from gristmill_platform.datastore.paths import InvalidPath, validate_object_path


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
