"""Pure parts of the craft-ai-sdk 0.74 support: endpoint options, build log windows,
project information."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from gristmill_platform.deployments.endpoint_options import (
    chosen_endpoint_token,
    endpoint_url_path,
    execution_timeout,
)
from gristmill_platform.errors import BadRequest
from gristmill_platform.pipelines.build_logs import LogWindow, build_log_lines, log_window


def test_endpoint_url_path_defaults_to_the_name_and_is_one_segment() -> None:
    assert endpoint_url_path(None, "endpoint", "my-ep") == "my-ep"
    assert endpoint_url_path("v2_predict", "endpoint", "my-ep") == "v2_predict"
    assert endpoint_url_path(None, "periodic", "cron") is None
    for bad in ("", "a/b", "-lead", "x" * 101, 3, "..", "a b"):
        with pytest.raises(BadRequest, match="endpoint_url_path"):
            endpoint_url_path(bad, "endpoint", "n")
    with pytest.raises(BadRequest, match="only applies to endpoint"):
        endpoint_url_path("x", "periodic", "n")


def test_chosen_tokens_are_long_and_header_safe() -> None:
    assert chosen_endpoint_token(None, "endpoint") is None
    assert chosen_endpoint_token("a" * 16, "endpoint") == "a" * 16
    assert chosen_endpoint_token("Ab0._~+/=-" * 3, "endpoint") == "Ab0._~+/=-" * 3
    for bad in ("a" * 15, "a" * 257, "a" * 20 + "\n", "é" * 20, 1234567890123456789):
        with pytest.raises(BadRequest) as caught:
            chosen_endpoint_token(bad, "endpoint")
        assert str(bad) not in caught.value.message
    with pytest.raises(BadRequest, match="only applies to endpoint"):
        chosen_endpoint_token("a" * 20, "periodic")


def test_execution_timeout() -> None:
    assert execution_timeout(None) is None
    assert execution_timeout(1) == 1
    for bad in (0, -1, 1.5, True, "10", 7 * 24 * 3600 + 1):
        with pytest.raises(BadRequest, match="execution_timeout_s"):
            execution_timeout(bad)


def _step(log: str, when: datetime) -> Any:
    return SimpleNamespace(build_log=log, updated_at=when)


def test_build_log_window() -> None:
    when = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    step = _step("one\ntwo\nthree", when)
    assert [line["message"] for line in build_log_lines(step, LogWindow())] == [
        "one", "two", "three"]
    assert [line["message"] for line in build_log_lines(step, LogWindow(limit=2))] == [
        "two", "three"]
    ms = int(when.timestamp() * 1000)
    assert build_log_lines(step, log_window({"from": ms + 1})) == []
    assert build_log_lines(step, log_window({"to": ms - 1})) == []
    assert len(build_log_lines(step, log_window({"from": ms, "to": ms}))) == 3
    for bad in ({"limit": 0}, {"limit": True}, {"limit": "3"}, {"from": "x"}):
        with pytest.raises(BadRequest):
            log_window(bad)


def test_project_information_shows_defaults_never_the_deploy_key(tmp_path) -> None:
    from gristmill_platform.project.service import environment_id, project_information
    from gristmill_platform.settings import Settings, resolve_settings

    settings = resolve_settings(Settings(
        data_dir=tmp_path, step_default_requirements_path="requirements.txt",
        step_default_repository_deploy_key="-----BEGIN KEY-----secret",
        step_default_repository_url="https://bot:token-secret@git.example/team/repo.git"))
    info = project_information(settings)
    assert info["requirements_path"] == "requirements.txt"
    assert info["has_repository_deploy_key"] is True
    assert "secret" not in str(info)
    assert info["repository_url"] == "https://***@git.example/team/repo.git"
    assert info["environment_id"] == environment_id(settings)
