from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gristmill_platform.errors import BadRequest
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.io import check_outputs, expand_datastore_path, plan_outputs
from gristmill_platform.steps.spec import ProjectDefaults, resolve_container_config


@pytest.mark.parametrize(("current", "target"), [
    (t.PENDING, t.RUNNING), (t.PENDING, t.FAILED), (t.PENDING, t.CANCELLED),
    (t.RUNNING, t.SUCCEEDED), (t.RUNNING, t.FAILED), (t.RUNNING, t.CANCELLED)])
def test_allowed_transitions(current: str, target: str) -> None:
    assert t.transition(current, target) == target


@pytest.mark.parametrize(("current", "target"), [
    (t.PENDING, t.SUCCEEDED), (t.SUCCEEDED, t.FAILED), (t.FAILED, t.RUNNING),
    (t.CANCELLED, t.RUNNING), (t.RUNNING, t.PENDING), (t.SUCCEEDED, t.SUCCEEDED)])
def test_ended_executions_never_change(current: str, target: str) -> None:
    with pytest.raises(t.InvalidTransition):
        t.transition(current, target)


def test_datastore_path_patterns() -> None:
    when = datetime(2026, 11, 23, 9, 5, 7, tzinfo=UTC)
    assert expand_datastore_path("out/{execution_id}/{date}/{date_time}.csv", "p-1", when) == (
        "out/p-1/20261123/20261123_090507.csv")


def test_output_checks_name_the_output() -> None:
    plans = plan_outputs([{"name": "a", "data_type": "number"},
                          {"name": "f", "data_type": "file"}], [])
    assert check_outputs(plans, {"a": 1}, {"f"}) == ({"a": 1}, None)
    assert "'a' is missing" in (check_outputs(plans, {}, {"f"})[1] or "")
    assert "type number" in (check_outputs(plans, {"a": "1"}, {"f"})[1] or "")
    assert "'f' (file) is missing" in (check_outputs(plans, {"a": 1}, set())[1] or "")
    assert "undeclared" in (check_outputs(plans, {"a": 1, "b": 2}, {"f"})[1] or "")


def test_project_defaults_apply_unless_nulled_or_overridden() -> None:
    defaults = ProjectDefaults(language="python:3.11-slim", requirements_path="req.txt",
                               repository_url="https://example.com/r.git",
                               system_dependencies=("curl",))
    fallback, _ = resolve_container_config({}, defaults)
    assert (fallback.requirements_path, fallback.repository_url) == ("req.txt",
                                                                      "https://example.com/r.git")
    assert fallback.system_dependencies == ["curl"]
    nulled, _ = resolve_container_config({"requirements_path": "", "repository_url": ""},
                                         defaults)
    assert (nulled.requirements_path, nulled.repository_url) == (None, None)
    own, key = resolve_container_config({"requirements_path": "other.txt",
                                         "repository_deploy_key": "KEY"}, defaults)
    assert own.requirements_path == "other.txt" and key == "KEY"
    with pytest.raises(BadRequest, match="inside the step's folder"):
        resolve_container_config({"requirements_path": "../x.txt"}, defaults)


def test_invalid_transition_names_both_statuses() -> None:
    with pytest.raises(t.InvalidTransition) as caught:
        t.transition(t.SUCCEEDED, t.RUNNING)
    assert str(caught.value) == "an execution cannot go from succeeded to running"
    assert not t.can_transition("unknown", t.RUNNING)
