"""Metrics: nothing is sent outside an execution; inside one, the contract's requests
(§10), batching and paging."""

from __future__ import annotations

import contextvars
import json
import sys
import types
import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from gristmill import Gristmill, InvalidResponseError, PermissionDeniedError
from gristmill import _execution_context as _context
from tests.sdk._scripted_server import Reply, ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer().running() as srv:
        srv.allow_login()
        yield srv


@pytest.fixture(autouse=True)
def outside_any_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _context.EXECUTION_ID_VARS:
        monkeypatch.delenv(name, raising=False)
    # Re-detect the runtime's context variable in every test.
    monkeypatch.setattr(_context, "_context_var", None)


def client(server: ScriptedServer, **options: object) -> Gristmill:
    return Gristmill(server.url, "gm_t_t", progress=False, max_retries=0, **options)  # type: ignore[arg-type]


def test_outside_an_execution_nothing_is_sent(server: ScriptedServer) -> None:
    with client(server) as gm:
        with pytest.warns(UserWarning, match="only records inside an execution"):
            assert gm.record_metric_value("accuracy", 0.9) is False
        with pytest.warns(UserWarning):
            assert gm.record_list_metric_values("loss", [1.0, 0.5]) is False
    with client(server, warn_on_metric_outside_of_step=False) as quiet, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.record_metric_value("accuracy", 0.9) is False
    assert server.seen == []


@pytest.mark.parametrize("variable", ["GRISTMILL_EXECUTION_ID", "CRAFT_AI_EXECUTION_ID"])
def test_inside_an_execution_by_environment(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "p1-7")
    server.script("PUT /api/v1/metrics/single-value/accuracy", Reply(204))
    with client(server) as gm:
        assert gm.record_metric_value("accuracy", 0.9) is True
    (put,) = [s for s in server.seen if s.method == "PUT"]
    assert json.loads(put.body) == {"value": 0.9, "execution_id": "p1-7"}


def test_the_runtime_context_variable_wins(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("current_execution_id")
    fake = types.ModuleType("gristmill.runtime.context")
    fake.current_execution_id = var  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gristmill.runtime.context", fake)
    monkeypatch.setenv("CRAFT_AI_EXECUTION_ID", "from-env")
    assert _context.current_execution_id() == "from-env"  # variable not set: env var
    token = var.set("from-context")
    try:
        assert _context.current_execution_id() == "from-context"
    finally:
        var.reset(token)


def test_without_the_runtime_the_environment_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gristmill.runtime.context", None)  # import fails
    assert _context.current_execution_id() is None
    monkeypatch.setenv("GRISTMILL_EXECUTION_ID", "e1")
    assert _context.current_execution_id() == "e1"


def test_list_values_are_sent_in_batches_of_10000(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_EXECUTION_ID", "p1-7")
    server.script("POST /api/v1/metrics/list-values/loss", Reply(204))
    with client(server) as gm:
        assert gm.record_list_metric_values("loss", [float(i) for i in range(25_001)]) is True
        assert gm.record_list_metric_values("loss", 0.25) is True
    bodies = [json.loads(s.body) for s in server.seen if s.method == "POST" and "list" in s.path]
    assert [len(b["values"]) for b in bodies] == [10_000, 10_000, 5_001, 1]
    assert bodies[2]["values"][-1] == 25_000.0 and bodies[3]["values"] == [0.25]
    assert all(b["execution_id"] == "p1-7" for b in bodies)


def test_numpy_like_scalars_become_json_numbers(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Float32:
        def __float__(self) -> float:
            return 0.5

    monkeypatch.setenv("GRISTMILL_EXECUTION_ID", "p1-7")
    server.script("PUT /api/v1/metrics/single-value/acc", Reply(204))
    with client(server) as gm:
        gm.record_metric_value("acc", Float32())  # type: ignore[arg-type]
    (put,) = [s for s in server.seen if s.method == "PUT"]
    assert json.loads(put.body)["value"] == 0.5


def test_get_metrics_pages_until_total_count(server: ScriptedServer) -> None:
    item = {"name": "acc", "value": 1, "execution_id": "p1-1"}
    server.script(
        "GET /api/v1/metrics/single-value",
        Reply(200, {"metrics": [item] * 2, "total_count": 3}),
        Reply(200, {"metrics": [item], "total_count": 3}),
    )
    with client(server) as gm:
        assert gm.get_metrics(name="acc", pipeline_name="p1") == [item] * 3
    queries = [parse_qs(urlsplit(s.path).query) for s in server.seen if "metrics" in s.path]
    assert queries == [
        {
            "filters[name]": ["acc"],
            "filters[pipeline_name]": ["p1"],
            "items_per_page": ["5000"],
            "page": [str(page)],
        }
        for page in (1, 2)
    ]
    # The brackets travel percent-encoded, as with craft-ai-sdk.
    assert "filters%5Bname%5D=acc" in next(s.path for s in server.seen if "metrics" in s.path)


def test_get_list_metrics_and_an_inconsistent_total(server: ScriptedServer) -> None:
    server.script(
        "GET /api/v1/metrics/list-values",
        Reply(200, {"metrics": [{"value": 1}], "total_count": 5}),
        Reply(200, {"metrics": [], "total_count": 5}),
    )
    with client(server) as gm, pytest.raises(InvalidResponseError, match="total_count"):
        gm.get_list_metrics(execution_id="p1-1")


def test_no_metrics(server: ScriptedServer) -> None:
    server.script("GET /api/v1/metrics/single-value", Reply(200, {"total_count": 0}))
    with client(server) as gm:
        assert gm.get_metrics() == []
        assert list(gm.iter_metrics(deployment_name="d")) == []


def test_a_403_inside_an_execution_says_why(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script("GET /api/v1/steps", Reply(403, {"message": "no", "name": "Forbidden"}))
    with client(server) as gm:
        with pytest.raises(PermissionDeniedError) as outside:
            gm.list_steps()
        monkeypatch.setenv("GRISTMILL_EXECUTION_ID", "p1-7")
        with pytest.raises(PermissionDeniedError) as inside:
            gm.list_steps()
    assert "inside an execution" not in str(outside.value)
    assert "inside an execution" in str(inside.value)
