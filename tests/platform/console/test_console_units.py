"""Pure parts of the console: the Deploy form's body, data store browsing, the CSP."""

from __future__ import annotations

import pytest

from gristmill_platform.console.datastore import browse
from gristmill_platform.console.deploy_form import deployment_body
from gristmill_platform.console.web import content_security_policy
from gristmill_platform.errors import BadRequest
from gristmill_platform.settings import Settings

INPUTS = [{"name": "n", "data_type": "number"}, {"name": "s", "data_type": "string"},
          {"name": "f", "data_type": "file"}, {"name": "b", "data_type": "boolean"}]
OUTPUTS = [{"name": "out", "data_type": "json"}]


def test_deploy_form_becomes_the_api_body() -> None:
    rule, body = deployment_body("p", INPUTS, OUTPUTS, {
        "name": " d1 ", "execution_rule": "periodic", "mode": "low_latency",
        "schedule": "0 3 * * *", "timeout_s": "60",
        "in.n.source": "constant", "in.n.value": "2.5",
        "in.s.source": "environment", "in.s.value": "VAR",
        "in.f.source": "datastore", "in.f.value": "data/x.csv",
        "in.b.source": "constant", "in.b.value": "True",
        "out.out.destination": "datastore", "out.out.value": "results/out.json",
        "enable_parallel_executions": "1", "max_parallel_executions_per_pod": "4",
        "ram_request": "512MiB"})
    assert rule == "periodic"
    assert body["name"] == "d1" and body["schedule"] == "0 3 * * *" and body["timeout_s"] == 60
    assert body["inputs_mapping"] == [
        {"pipeline_input_name": "n", "constant_value": 2.5},
        {"pipeline_input_name": "s", "environment_variable_name": "VAR"},
        {"pipeline_input_name": "f", "datastore_path": "data/x.csv"},
        {"pipeline_input_name": "b", "constant_value": True}]
    assert body["outputs_mapping"] == [{"pipeline_output_name": "out",
                                        "datastore_path": "results/out.json"}]
    assert body["enable_parallel_executions"] is True
    assert body["max_parallel_executions_per_pod"] == 4 and body["ram_request"] == "512MiB"


def test_endpoint_defaults_and_elastic_leaves_low_latency_options_out() -> None:
    rule, body = deployment_body("p", INPUTS[:1], OUTPUTS, {
        "name": "e", "mode": "elastic", "enable_parallel_executions": "1"})
    assert rule == "endpoint" and "schedule" not in body
    assert body["inputs_mapping"] == [{"pipeline_input_name": "n", "endpoint_input_name": "n"}]
    assert body["outputs_mapping"] == [{"pipeline_output_name": "out",
                                        "endpoint_output_name": "out"}]
    assert "enable_parallel_executions" not in body


def test_a_constant_that_is_not_of_the_input_type_is_refused() -> None:
    with pytest.raises(BadRequest, match="'n': the constant 'abc' is not a valid number"):
        deployment_body("p", INPUTS[:1], [], {"name": "x", "in.n.source": "constant",
                                               "in.n.value": "abc"})
    with pytest.raises(BadRequest, match="unknown source"):
        deployment_body("p", INPUTS[:1], [], {"name": "x", "in.n.source": "magic"})


@pytest.mark.parametrize(("data_type", "value", "fragment"), [
    ("number", "NaN", "NaN is not a JSON number"),
    ("number", "1e999", "out of range"),
    ("array", "[1, -Infinity]", "-Infinity is not a JSON number"),
    ("json", '{"a": {"b": 1e400}}', "out of range"),
    ("json", "[" * 100_000 + "]" * 100_000, "nests deeper than 100"),
])
def test_a_constant_is_read_as_strictly_as_the_api_reads_json(data_type, value,
                                                              fragment) -> None:
    declared = [{"name": "v", "data_type": data_type}]
    with pytest.raises(BadRequest, match=f"'v': the constant .* is not a valid {data_type}: "
                                         f".*{fragment}"):
        deployment_body("p", declared, [], {"name": "x", "in.v.source": "constant",
                                            "in.v.value": value})


def test_browse_lists_folders_and_objects_under_a_prefix() -> None:
    paths = [(p, p) for p in ("a.txt", "d/b.txt", "d/e/c.txt", "d/e/f/g.txt", "z/y.txt")]
    assert browse(paths, "") == (["d/", "z/"], [("a.txt", "a.txt")])
    assert browse(paths, "d/") == (["d/e/"], [("d/b.txt", "d/b.txt")])
    assert browse(paths, "d/e/") == (["d/e/f/"], [("d/e/c.txt", "d/e/c.txt")])


def test_csp_allows_only_the_server_and_an_s3_store() -> None:
    local = content_security_policy(Settings(datastore_backend="local"))
    assert "connect-src 'self';" in local and "unsafe" not in local
    s3 = content_security_policy(Settings(datastore_backend="s3", s3_bucket="b",
                                          s3_public_endpoint_url="https://s3.example.com:9000/x"))
    assert "connect-src 'self' https://s3.example.com:9000;" in s3
    aws = content_security_policy(Settings(datastore_backend="s3", s3_bucket="b"))
    assert "connect-src 'self' https://*.amazonaws.com;" in aws


def test_the_session_cookie_is_secure_when_the_environment_is_https() -> None:
    from types import SimpleNamespace

    from fastapi import Response

    from gristmill_platform.console.web import set_session_cookie

    for url, secure in (("https://gm.example.com", True), ("http://127.0.0.1:8765", False)):
        state = SimpleNamespace(settings=SimpleNamespace(environment_url=url))
        response = Response()
        set_session_cookie(response, state, "sid", 60)  # type: ignore[arg-type]
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert ("Secure" in cookie) is secure
