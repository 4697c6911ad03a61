"""Name/label cleaning and the merge patches behind low-latency updates."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill_platform.executors.kubernetes.apply import (
    ANNOTATION_APPLIED,
    apply_patch,
    merge_patch,
    update_patch,
    with_applied_annotation,
)
from gristmill_platform.executors.kubernetes.naming import (
    is_label_value,
    is_resource_name,
    label_value,
    resource_name,
)

# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("run-1", "gm-exec-run-1"),  # already clean: kept as is, no hash
        ("0123", "gm-exec-0123"),
    ],
)
def test_clean_ids_are_kept_readable(raw: str, expected: str) -> None:
    assert resource_name("gm-exec-", raw) == expected


@pytest.mark.parametrize("raw", ["Run_1", "a/b", "x" * 100, "ü", "", "-a-", "a--b"])
def test_cleaned_names_are_valid_and_marked_with_a_hash(raw: str) -> None:
    name = resource_name("gm-exec-", raw)
    assert is_resource_name(name), name
    assert name == resource_name("gm-exec-", raw)  # deterministic
    assert len(name) <= 63


def test_a_prefix_that_is_not_dns_safe_is_refused() -> None:
    with pytest.raises(ValueError):
        resource_name("1bad-", "x")


@pytest.mark.parametrize(
    ("raw", "same"),
    [("train", True), ("Train.v2_final", True), ("a b", False), ("é", False), ("x" * 64, False)],
)
def test_label_values(raw: str, same: bool) -> None:
    value = label_value(raw)
    assert is_label_value(value), value
    assert (value == raw) is same


def test_label_values_that_clean_alike_stay_distinct() -> None:
    assert label_value("a b") != label_value("a/b")
    assert label_value("x" * 70) != label_value("x" * 71)


def test_empty_label_value_is_valid() -> None:
    assert label_value("") == ""


# --- merge patches --------------------------------------------------------------------------

OLD: dict[str, Any] = {
    "spec": {
        "replicas": 1,
        "nodeSelector": {"gristmill.io/pool": "gpu"},
        "containers": [{"name": "runner", "image": "a"}],
        "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"},
    }
}
NEW: dict[str, Any] = {
    "spec": {
        "replicas": 2,
        "containers": [{"name": "runner", "image": "b"}],
        "limits": {"memory": "1Gi"},
    }
}


def test_merge_patch_nulls_what_disappeared_and_replaces_lists() -> None:
    assert merge_patch(OLD, NEW) == {
        "spec": {
            "replicas": 2,
            "nodeSelector": None,
            "containers": [{"name": "runner", "image": "b"}],
            "limits": {"nvidia.com/gpu": None},
        }
    }


def test_merge_patch_round_trips() -> None:
    assert apply_patch(OLD, merge_patch(OLD, NEW)) == NEW
    assert apply_patch(NEW, merge_patch(NEW, OLD)) == OLD


def test_no_change_no_patch() -> None:
    assert merge_patch(OLD, OLD) == {}


def _manifest(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "w", "labels": labels or {"a": "1"}}, "spec": spec}


def test_update_patch_uses_what_was_applied_not_what_the_cluster_added() -> None:
    first = _manifest(OLD["spec"])
    live = with_applied_annotation(first)
    live["spec"]["progressDeadlineSeconds"] = 600  # defaulted by the API server
    live["status"] = {"readyReplicas": 1}

    assert update_patch(live, first) == {}
    patch = update_patch(live, _manifest(NEW["spec"], {"b": "2"}))
    assert patch is not None
    assert "progressDeadlineSeconds" not in patch["spec"]
    assert "status" not in patch
    assert patch["spec"]["nodeSelector"] is None
    assert patch["metadata"]["labels"] == {"a": None, "b": "2"}
    assert ANNOTATION_APPLIED in patch["metadata"]["annotations"]


def test_an_object_we_never_applied_is_not_patched() -> None:
    live = _manifest({"replicas": 1, "clusterIP": "10.0.0.7"})
    assert update_patch(live, _manifest({"replicas": 1})) is None
