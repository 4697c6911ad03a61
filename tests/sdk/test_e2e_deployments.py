"""Our SDK against the real server: the documentation's deployment examples."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest

from gristmill import Gristmill, Input, InputSource, Output, OutputDestination
from gristmill.errors import AuthenticationError, BadRequestError
from tests.sdk.conftest import RequestLog

CODE = '''
def multiply(number1: float, number2: float) -> dict:
    return {"result": number1 * number2}


def describe(data_file: dict, label: str) -> dict:
    with open(data_file["path"], "rb") as handle:
        size = len(handle.read())
    with open("out.txt", "w") as handle:
        handle.write(f"{label}: {size} bytes")
    return {"summary": {"path": "out.txt"}}
'''


@pytest.fixture
def sdk(gristmill_env):
    with Gristmill(environment_url=gristmill_env.url, sdk_token=gristmill_env.sdk_token,
                   progress=False) as client:
        yield client


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text(CODE)
    return tmp_path


def test_endpoint_periodic_and_management(sdk, folder, unique) -> None:
    name = f"sdk-mul-{unique}"
    sdk.create_pipeline(pipeline_name=name, function_path="src/main.py",
                        function_name="multiply",
                        inputs=[Input("number1", "number"), Input("number2", "number")],
                        outputs=[Output("result", "number")],
                        container_config={"local_folder": str(folder)})
    endpoint = sdk.create_deployment(name, f"ep-{unique}", "endpoint", inputs_mapping=[
        InputSource(pipeline_input_name="number2", constant_value=10)])
    token = endpoint["endpoint_token"]
    result = sdk.trigger_endpoint(f"ep-{unique}", token, inputs={"number1": 4})
    assert result["outputs"] == {"result": 40}
    started = sdk.trigger_endpoint(f"ep-{unique}", token, inputs={"number1": 1},
                                   wait_for_results=False)
    assert sdk.retrieve_endpoint_results(f"ep-{unique}", started["execution_id"], token)[
        "outputs"] == {"result": 10}
    assert sdk.get_deployment(f"ep-{unique}")["last_execution_id"] == started["execution_id"]
    new = sdk.generate_new_endpoint_token(f"ep-{unique}")["endpoint_token"]
    with pytest.raises(AuthenticationError):
        sdk.trigger_endpoint(f"ep-{unique}", token, inputs={"number1": 1})
    with pytest.raises(BadRequestError):
        sdk.trigger_endpoint(f"ep-{unique}", new, inputs={"nope": 1})
    assert sdk.update_deployment(f"ep-{unique}", is_enabled=False)["is_enabled"] is False
    periodic = sdk.create_deployment(
        name, f"cron-{unique}", "periodic", schedule="0 0 * * *",
        inputs_mapping=[InputSource(pipeline_input_name="number1", constant_value=1),
                        InputSource(pipeline_input_name="number2", constant_value=2)],
        outputs_mapping=[OutputDestination(pipeline_output_name="result", is_null=True)])
    assert periodic["human_readable_schedule"].startswith("At 12:00 AM")
    assert {f"ep-{unique}", f"cron-{unique}"} <= {d["name"] for d in sdk.list_deployments()}
    assert sdk.get_deployment_logs(f"cron-{unique}") == []
    assert sdk.delete_deployment(f"cron-{unique}")["execution_rule"] == "periodic"


def test_endpoint_calls_use_the_clients_http_client(gm: Gristmill, request_log: RequestLog,
                                                    folder, unique) -> None:
    """``Gristmill(http_client=...)`` (a private CA, a proxy) carries the endpoint calls
    too, and a wrong endpoint token is reported as such (not as a bad SDK token)."""
    name = f"sdk-hc-{unique}"
    gm.create_pipeline(pipeline_name=name, function_path="src/main.py",
                       function_name="multiply",
                       inputs=[Input("number1", "number"), Input("number2", "number")],
                       outputs=[Output("result", "number")],
                       container_config={"local_folder": str(folder)})
    token = gm.create_deployment(name, f"hc-{unique}", "endpoint")["endpoint_token"]
    request_log.clear()
    result = gm.trigger_endpoint(f"hc-{unique}", token, inputs={"number1": 2, "number2": 3})
    assert result["outputs"] == {"result": 6}
    execution = result["execution_id"]
    assert request_log.paths()[0] == f"POST /endpoints/hc-{unique}"
    assert set(request_log.paths()[1:]) == {f"GET /endpoints/hc-{unique}/executions/{execution}"}
    assert all(r.headers["authorization"] == f"EndpointToken {token}"
               for r in request_log.requests)
    with pytest.raises(AuthenticationError) as err:
        gm.trigger_endpoint(f"hc-{unique}", "not-the-endpoint-token", inputs={"number1": 1})
    assert err.value.name == "InvalidEndpointToken"
    assert "generate_new_endpoint_token" in str(err.value)
    assert "GRISTMILL_SDK_TOKEN" not in str(err.value)
    gm.delete_deployment(f"hc-{unique}")


def test_file_endpoint(sdk, folder, unique) -> None:
    name = f"sdk-desc-{unique}"
    sdk.create_pipeline(pipeline_name=name, function_path="src/main.py",
                        function_name="describe",
                        inputs=[Input("data_file", "file"), Input("label", "string")],
                        outputs=[Output("summary", "file")],
                        container_config={"local_folder": str(folder)})
    token = sdk.create_deployment(name, f"file-{unique}", "endpoint")["endpoint_token"]
    # unlike craft-ai-sdk, the other inputs travel with the file
    result = sdk.trigger_endpoint(f"file-{unique}", token,
                                  inputs={"data_file": io.BytesIO(b"123"), "label": "doc"})
    assert result["outputs"] == {"summary": b"doc: 3 bytes"}


def test_resource_metrics(sdk) -> None:
    now = datetime.now()
    metrics = sdk.get_resource_metrics(now - timedelta(minutes=5), now)
    assert set(metrics["metrics"]) >= {"cpu_usage", "ram_usage", "disk_usage"}
    assert isinstance(sdk.get_resource_metrics(now - timedelta(minutes=5), now, csv=True),
                      bytes)
