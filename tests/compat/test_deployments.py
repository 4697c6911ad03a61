"""The documentation's deployment examples with craft-ai-sdk 0.50.1, unchanged."""

from __future__ import annotations

import io

import pytest

CODE = '''
def multiply(number1: float, number2: float) -> dict:
    print(f"multiplying {number1} by {number2}")
    return {"result": number1 * number2}


def describe(data_file: dict, label: str) -> dict:
    with open(data_file["path"], "rb") as handle:
        size = len(handle.read())
    with open("described.txt", "w") as handle:
        handle.write(f"{label}: {size} bytes")
    return {"summary": {"path": "described.txt"}}
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    (root / "src").mkdir()
    (root / "src" / "multiply.py").write_text(CODE)
    return root


@pytest.fixture
def multiply(craft_sdk, folder, unique):
    from craft_ai_sdk.io import Input, Output

    name = f"multiply-{unique}"
    craft_sdk.create_pipeline(
        pipeline_name=name, function_path="src/multiply.py", function_name="multiply",
        inputs=[Input(name="number1", data_type="number"),
                Input(name="number2", data_type="number")],
        outputs=[Output(name="result", data_type="number")],
        container_config={"local_folder": str(folder), "requirements_path": ""})
    return name


def test_endpoint_with_auto_mapping(craft_sdk, multiply, unique) -> None:
    endpoint = craft_sdk.create_deployment(pipeline_name=multiply,
                                           deployment_name=f"ep-{unique}",
                                           execution_rule="endpoint")
    assert endpoint["name"] == f"ep-{unique}" and endpoint["endpoint_token"]
    result = craft_sdk.trigger_endpoint(f"ep-{unique}", endpoint["endpoint_token"],
                                        inputs={"number1": 9, "number2": 6})
    assert result["outputs"] == {"result": 54}
    later = craft_sdk.trigger_endpoint(f"ep-{unique}", endpoint["endpoint_token"],
                                       inputs={"number1": 2, "number2": 3},
                                       wait_for_results=False)
    assert craft_sdk.retrieve_endpoint_results(
        f"ep-{unique}", later["execution_id"], endpoint["endpoint_token"])["outputs"] == {
        "result": 6}
    info = craft_sdk.get_deployment(f"ep-{unique}")
    assert info["status"] == "up" and info["endpoint_token"] == endpoint["endpoint_token"]
    assert info["last_execution_id"] == later["execution_id"]
    assert f"ep-{unique}" in {d["name"] for d in craft_sdk.list_deployments()}
    executions = craft_sdk.list_pipeline_executions(multiply)
    assert {e["deployment_name"] for e in executions} == {f"ep-{unique}"}


def test_endpoint_with_io_mappings_and_new_token(craft_sdk, multiply, unique) -> None:
    from craft_ai_sdk.exceptions import SdkException
    from craft_ai_sdk.io import InputSource, OutputDestination

    craft_sdk.create_or_update_environment_variable(f"FACTOR_{unique}", "10")
    endpoint = craft_sdk.create_deployment(
        pipeline_name=multiply, deployment_name=f"map-{unique}", execution_rule="endpoint",
        inputs_mapping=[
            InputSource(step_input_name="number1", endpoint_input_name="number_a"),
            InputSource(step_input_name="number2",
                        environment_variable_name=f"FACTOR_{unique}")],
        outputs_mapping=[OutputDestination(step_output_name="result",
                                           endpoint_output_name="product")])
    result = craft_sdk.trigger_endpoint(f"map-{unique}", endpoint["endpoint_token"],
                                        inputs={"number_a": 4})
    assert result["outputs"] == {"product": 40}
    new_token = craft_sdk.generate_new_endpoint_token(f"map-{unique}")["endpoint_token"]
    with pytest.raises(SdkException) as caught:
        craft_sdk.trigger_endpoint(f"map-{unique}", endpoint["endpoint_token"],
                                   inputs={"number_a": 1})
    assert caught.value.status_code == 401
    assert craft_sdk.trigger_endpoint(f"map-{unique}", new_token, inputs={"number_a": 1}
                                      )["outputs"] == {"product": 10}
    with pytest.raises(SdkException) as caught:
        craft_sdk.trigger_endpoint(f"map-{unique}", new_token, inputs={"number_b": 1})
    assert caught.value.status_code == 400


def test_periodic_deployment(craft_sdk, multiply, unique) -> None:
    from craft_ai_sdk.io import InputSource, OutputDestination

    periodic = craft_sdk.create_deployment(
        pipeline_name=multiply, deployment_name=f"cron-{unique}", execution_rule="periodic",
        schedule="0 0 * * *",
        inputs_mapping=[InputSource(step_input_name="number1", constant_value=6),
                        InputSource(step_input_name="number2", constant_value=3)],
        outputs_mapping=[OutputDestination(step_output_name="result", is_null=True)])
    assert periodic["schedule"] == "0 0 * * *"
    assert periodic["human_readable_schedule"].startswith("At 12:00 AM")
    assert craft_sdk.get_deployment(f"cron-{unique}")["execution_rule"] == "periodic"
    assert craft_sdk.delete_deployment(f"cron-{unique}") == {
        "name": f"cron-{unique}", "execution_rule": "periodic"}


def test_file_endpoint(craft_sdk, folder, unique) -> None:
    from craft_ai_sdk.io import Input, InputSource, Output

    name = f"describe-{unique}"
    craft_sdk.create_pipeline(
        pipeline_name=name, function_path="src/multiply.py", function_name="describe",
        inputs=[Input(name="data_file", data_type="file"), Input(name="label", data_type="string")],
        outputs=[Output(name="summary", data_type="file")],
        container_config={"local_folder": str(folder), "requirements_path": ""})
    endpoint = craft_sdk.create_deployment(
        pipeline_name=name, deployment_name=f"file-{unique}", execution_rule="endpoint",
        inputs_mapping=[InputSource(step_input_name="label", constant_value="doc")])
    result = craft_sdk.trigger_endpoint(f"file-{unique}", endpoint["endpoint_token"],
                                        inputs={"data_file": io.BytesIO(b"12345")})
    assert result["outputs"] == {"summary": b"doc: 5 bytes"}


def test_delete_pipeline_with_deployments(craft_sdk, multiply, unique) -> None:
    from craft_ai_sdk.exceptions import SdkException

    craft_sdk.create_deployment(pipeline_name=multiply, deployment_name=f"gone-{unique}",
                                execution_rule="endpoint")
    with pytest.raises(SdkException) as caught:
        craft_sdk.delete_pipeline(multiply)
    assert caught.value.status_code == 409
    deleted = craft_sdk.delete_pipeline(multiply, force_deployments_deletion=True)
    assert deleted["deployments"] == [{"name": f"gone-{unique}", "execution_rule": "endpoint"}]
