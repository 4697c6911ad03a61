"""Plausible wrong argument types are refused before any request, with an error naming
the argument (not an AttributeError from inside the SDK, nor a server error about
something else). Against a scripted server that records what reaches it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from gristmill import Gristmill
from tests.sdk._scripted_server import Reply, ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        srv.allow_login()
        yield srv


CASES: dict[str, tuple[Callable[[Gristmill], Any], str]] = {
    "run_pipeline inputs list": (
        lambda gm: gm.run_pipeline("multiply", inputs=[1, 2]),  # type: ignore[arg-type]
        "'inputs' must be a mapping",
    ),
    "trigger_endpoint inputs list": (
        lambda gm: gm.trigger_endpoint("ep", "tok", inputs=[1, 2]),  # type: ignore[arg-type]
        "'inputs' must be a mapping",
    ),
    "export start str": (
        lambda gm: gm.export_deployment_executions(
            "scorer", "exports/x.parquet", start="2026-12-01"),  # type: ignore[arg-type]
        "'start' must be a datetime",
    ),
    "export end str": (
        lambda gm: gm.export_deployment_executions(
            "scorer", "exports/x.parquet", end="2026-12-01"),  # type: ignore[arg-type]
        "'end' must be a datetime",
    ),
    "traffic shadow str": (
        lambda gm: gm.set_deployment_traffic("scorer", shadow="scorer-v2"),
        "'shadow' must be a list of pipeline names",
    ),
    "traffic split list": (
        lambda gm: gm.set_deployment_traffic("scorer", split=["a", "b"]),  # type: ignore[arg-type]
        "'split' must be a mapping",
    ),
    "validations list": (
        lambda gm: gm.set_deployment_validations("scorer", ["score < 1"]),  # type: ignore[arg-type]
        "'validations' must be a mapping",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_argument_types_are_refused_before_any_request(
    server: ScriptedServer, case: str
) -> None:
    call, message = CASES[case]
    with (
        Gristmill(server.url, "gm_t_t", progress=False, max_retries=0) as gm,
        pytest.raises(TypeError, match=message),
    ):
        call(gm)
    assert server.paths() == []


def test_the_right_types_still_reach_the_server(server: ScriptedServer) -> None:
    server.script("PUT /api/v1/deployments/scorer/traffic", Reply(200, {"ok": True}))
    server.script("PUT /api/v1/deployments/scorer/validations", Reply(200, {"ok": True}))
    server.script("POST /api/v1/deployments/scorer/executions/export", Reply(200, {"rows": 0}))
    with Gristmill(server.url, "gm_t_t", progress=False, max_retries=0) as gm:
        gm.set_deployment_traffic("scorer", shadow=("scorer-v2",))
        gm.set_deployment_validations("scorer", {"low": "score < 1"})
        gm.export_deployment_executions(
            "scorer", "x.parquet", start=datetime(2026, 12, 1, tzinfo=timezone.utc))
    traffic, validations, export = (s.body for s in server.seen[1:])
    assert traffic == b'{"shadow":["scorer-v2"]}'
    assert validations == b'{"low":"score < 1"}'
    assert b'"start":"2026-12-01T00:00:00+00:00"' in export
