"""craft-ai-sdk 0.74.7 deployments: endpoints at a chosen URL path with a chosen token,
triggered with the endpoint token, with the SDK token and by plain HTTP; updates
(enable/disable, mappings, schedule); token rotation; execution timeouts; periodic and
low-latency deployments; deletions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

CODE = '''
import time


def multiply(number1: float, number2: float) -> dict:
    print(f"multiplying {number1} by {number2}")
    return {"result": number1 * number2}


def describe(data_file: dict, label: str) -> dict:
    with open(data_file["path"], "rb") as handle:
        size = len(handle.read())
    with open("described.txt", "w") as handle:
        handle.write(f"{label}: {size} bytes")
    return {"summary": {"path": "described.txt"}}


def slow(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deploy074")
    (root / "src").mkdir()
    (root / "src" / "multiply.py").write_text(CODE)
    return root


CREATE_MULTIPLY = '''
from craft_ai_sdk.io import Input, InputSource, Output, OutputDestination

pipeline = "multiply-" + ARGS["unique"]
if ARGS.get("create"):
    sdk.create_pipeline(
        pipeline, function_path="src/multiply.py", function_name="multiply",
        container_config={"local_folder": ARGS["folder"]},
        inputs=[Input("number1", "number"), Input("number2", "number")],
        outputs=[Output("result", "number")])
'''



def with_multiply(script: str) -> str:
    """The multiply pipeline's set-up (created when ARGS["create"]), then script."""
    return CREATE_MULTIPLY + textwrap.dedent(script)


def test_endpoint_everyday_flow(client, gristmill_env, folder, unique) -> None:
    token = f"chosen-token-{unique}"
    first = client(with_multiply('''
    endpoint = "ep-" + ARGS["unique"]
    created = sdk.create_deployment(
        pipeline, endpoint, "endpoint", endpoint_url_path="mult-" + ARGS["unique"],
        endpoint_token=ARGS["token"], execution_timeout_s=120, description="multiplies")
    with_token = sdk.trigger_endpoint(endpoint, ARGS["token"],
                                      inputs={"number1": 9, "number2": 6})
    with_sdk_token = sdk.trigger_endpoint(endpoint, inputs={"number1": 2, "number2": 4})
    later = sdk.trigger_endpoint(endpoint, ARGS["token"], inputs={"number1": 2, "number2": 3},
                                 wait_for_completion=False)
    results = sdk.retrieve_endpoint_results(endpoint, later["execution_id"], ARGS["token"])
    emit({"created": created, "with_token": with_token, "with_sdk_token": with_sdk_token,
          "later": later, "results": results, "deployment": sdk.get_deployment(endpoint),
          "listed": [d["name"] for d in sdk.list_deployments()],
          "short_token": error_of(sdk.create_deployment, pipeline, "short-" + ARGS["unique"],
                                  "endpoint", endpoint_token="short"),
          "path_taken": error_of(sdk.create_deployment, pipeline, "other-" + ARGS["unique"],
                                 "endpoint", endpoint_url_path="mult-" + ARGS["unique"])})
    '''), unique=unique, folder=str(folder), token=token, create=True)
    created = first["created"]
    assert created["status"] == "up" and created["endpoint_url_path"] == f"mult-{unique}"
    assert created["endpoint_token"] == token and created["execution_timeout_s"] == 120
    assert created["description"] == "multiplies"
    assert first["with_token"]["outputs"] == {"result": 54}
    assert first["with_sdk_token"]["outputs"] == {"result": 8}
    assert first["results"] == {"execution_id": first["later"]["execution_id"],
                                "outputs": {"result": 6}}
    assert first["deployment"]["last_execution_id"] == first["later"]["execution_id"]
    assert f"ep-{unique}" in first["listed"]
    assert first["short_token"]["status_code"] == 400
    assert first["short_token"]["name"] == "InvalidEndpointToken"
    assert first["path_taken"]["status_code"] == 409

    # a plain HTTP caller, at the chosen path
    answer = httpx.post(f"{gristmill_env.url}/endpoints/mult-{unique}",
                        headers={"Authorization": f"EndpointToken {token}"},
                        json={"number1": 5, "number2": 5}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"result": 25}

    second = client(with_multiply('''
    endpoint = "ep-" + ARGS["unique"]
    disabled = sdk.update_deployment(endpoint, is_enabled=False)
    refused = error_of(sdk.trigger_endpoint, endpoint, ARGS["token"],
                       inputs={"number1": 1, "number2": 1})
    remapped = sdk.update_deployment(
        endpoint, is_enabled=True,
        inputs_mapping=[InputSource(pipeline_input_name="number2", constant_value=10)],
        outputs_mapping=[OutputDestination(pipeline_output_name="result",
                                           endpoint_output_name="product")])
    product = sdk.trigger_endpoint(endpoint, ARGS["token"], inputs={"number1": 4})
    new_token = sdk.generate_new_endpoint_token(endpoint, endpoint_token=ARGS["token"] + "-2")
    emit({"disabled": disabled["is_enabled"], "refused": refused,
          "remapped": remapped, "product": product, "new_token": new_token,
          "old_token": error_of(sdk.trigger_endpoint, endpoint, ARGS["token"],
                                inputs={"number1": 1}),
          "with_new": sdk.trigger_endpoint(endpoint, ARGS["token"] + "-2",
                                           inputs={"number1": 1}),
          "logs": sdk.get_deployment_logs(endpoint),
          "in_use": error_of(sdk.delete_pipeline, pipeline),
          "deleted": sdk.delete_pipeline(pipeline, force_deployments_deletion=True),
          "gone": error_of(sdk.get_deployment, endpoint)})
    '''), unique=unique, token=token)
    assert second["disabled"] is False
    assert second["refused"]["status_code"] == 403
    inputs = {m["pipeline_input_name"]: m for m in second["remapped"]["inputs_mapping"]}
    assert inputs["number2"]["constant_value"] == 10
    assert second["remapped"]["outputs_mapping"][0]["endpoint_output_name"] == "product"
    assert second["product"]["outputs"] == {"product": 40}
    assert second["new_token"] == {"endpoint_token": f"{token}-2"}
    assert second["old_token"]["status_code"] == 401
    assert second["with_new"]["outputs"] == {"product": 10}
    assert second["logs"] == []  # elastic: no worker outside executions
    assert second["in_use"]["status_code"] == 409
    assert second["deleted"]["deployments"] == [{"name": f"ep-{unique}",
                                                 "execution_rule": "endpoint"}]
    assert second["gone"]["status_code"] == 404


def test_periodic_deployment_and_schedule_update(client, folder, unique) -> None:
    found = client(with_multiply('''
    cron = "cron-" + ARGS["unique"]
    created = sdk.create_deployment(
        pipeline, cron, "periodic", schedule="0 0 * * *",
        inputs_mapping=[InputSource(pipeline_input_name="number1", constant_value=6),
                        InputSource(pipeline_input_name="number2", constant_value=3)],
        outputs_mapping=[OutputDestination(pipeline_output_name="result", is_null=True)])
    updated = sdk.update_deployment(cron, schedule="30 1 * * 1")
    emit({"created": created, "updated": updated,
          "bad_schedule": error_of(sdk.update_deployment, cron, schedule="every day"),
          "not_endpoint": error_of(sdk.trigger_endpoint, cron, inputs={}),
          "deleted": sdk.delete_deployment(cron)})
    sdk.delete_pipeline(pipeline)
    '''), unique=unique, folder=str(folder), create=True)
    assert found["created"]["schedule"] == "0 0 * * *"
    assert "endpoint_url_path" not in found["created"]
    assert found["updated"]["schedule"] == "30 1 * * 1"
    assert found["updated"]["human_readable_schedule"] != \
        found["created"]["human_readable_schedule"]
    assert found["bad_schedule"]["status_code"] == 400
    assert found["not_endpoint"]["status_code"] == 400
    assert found["deleted"] == {"name": f"cron-{unique}", "execution_rule": "periodic"}


def test_execution_timeout_stops_a_long_execution(client, folder, unique) -> None:
    found = client('''
    from craft_ai_sdk.io import Input, Output

    pipeline = "slow-" + ARGS["unique"]
    sdk.create_pipeline(pipeline, function_path="src/multiply.py", function_name="slow",
                        container_config={"local_folder": ARGS["folder"]},
                        inputs=[Input("seconds", "number")], outputs=[Output("slept", "number")])
    sdk.create_deployment(pipeline, "short-" + ARGS["unique"], "endpoint",
                          execution_timeout_s=2)
    quick = sdk.trigger_endpoint("short-" + ARGS["unique"], inputs={"seconds": 0})
    started = sdk.trigger_endpoint("short-" + ARGS["unique"], inputs={"seconds": 60},
                                   wait_for_completion=False)
    emit({"quick": quick,
          "stopped": error_of(sdk.retrieve_pipeline_execution_outputs,
                              started["execution_id"]),
          "execution": sdk.get_pipeline_execution(started["execution_id"])})
    sdk.delete_pipeline(pipeline, force_deployments_deletion=True)
    ''', unique=unique, folder=str(folder))
    assert found["quick"]["outputs"] == {"slept": 0}
    assert found["stopped"]["status_code"] == 500
    assert "longer than its timeout (2 s)" in found["stopped"]["message"]
    assert found["execution"]["status"] == "Failed"


def test_low_latency_execution_timeout(client, folder, unique) -> None:
    found = client('''
    from craft_ai_sdk.io import Input, Output

    pipeline = "slowll-" + ARGS["unique"]
    sdk.create_pipeline(pipeline, function_path="src/multiply.py", function_name="slow",
                        container_config={"local_folder": ARGS["folder"]},
                        inputs=[Input("seconds", "number")], outputs=[Output("slept", "number")])
    warm = "shortll-" + ARGS["unique"]
    created = sdk.create_deployment(pipeline, warm, "endpoint", mode="low_latency",
                                    execution_timeout_s=1, wait_for_completion=True,
                                    timeout_s=600)
    token = created["endpoint_token"]
    before = sdk.trigger_endpoint(warm, token, inputs={"seconds": 0})
    started = sdk.trigger_endpoint(warm, inputs={"seconds": 60}, wait_for_completion=False)
    stopped = error_of(sdk.retrieve_pipeline_execution_outputs, started["execution_id"])
    execution = sdk.get_pipeline_execution(started["execution_id"])
    with_token = error_of(sdk.trigger_endpoint, warm, token, inputs={"seconds": 60})
    emit({"status": created["status"], "timeout": created["execution_timeout_s"],
          "before": before, "stopped": stopped, "execution": execution,
          "with_token": with_token,
          "after": sdk.trigger_endpoint(warm, token, inputs={"seconds": 0})})
    sdk.delete_pipeline(pipeline, force_deployments_deletion=True)
    ''', unique=unique, folder=str(folder))
    assert (found["status"], found["timeout"]) == ("up", 1)
    assert found["before"]["outputs"] == {"slept": 0}
    reason = "exceeded the deployment's execution timeout (1 s)"
    # with the SDK token (recorded in the database) and with the endpoint token (fast path)
    assert found["stopped"]["status_code"] == 500 and reason in found["stopped"]["message"]
    assert found["with_token"]["status_code"] == 500
    assert reason in found["with_token"]["message"]
    assert found["execution"]["status"] == "Failed"
    assert reason in found["execution"]["status_reason"]
    assert found["after"]["outputs"] == {"slept": 0}  # on the new worker


def test_low_latency_deployment(client, folder, unique) -> None:
    found = client(with_multiply('''
    warm = "warm-" + ARGS["unique"]
    created = sdk.create_deployment(pipeline, warm, "endpoint", mode="low_latency",
                                    wait_for_completion=True, timeout_s=600)
    result = sdk.trigger_endpoint(warm, created["endpoint_token"],
                                  inputs={"number1": 3, "number2": 7})
    emit({"status": created["status"], "result": result,
          "deployment": sdk.get_deployment(warm, wait_for_completion=True),
          "logs": sdk.get_deployment_logs(warm)})
    sdk.delete_pipeline(pipeline, force_deployments_deletion=True)
    '''), unique=unique, folder=str(folder), create=True)
    assert found["status"] == "up"
    assert found["result"]["outputs"] == {"result": 21}
    assert found["deployment"]["pods"]
    assert isinstance(found["logs"], list)


def test_file_endpoint_with_and_without_token(client, folder, unique) -> None:
    found = client('''
    import io
    from craft_ai_sdk.io import Input, Output

    pipeline = "describe-" + ARGS["unique"]
    sdk.create_pipeline(pipeline, function_path="src/multiply.py", function_name="describe",
                        container_config={"local_folder": ARGS["folder"]},
                        inputs=[Input("data_file", "file"), Input("label", "string")],
                        outputs=[Output("summary", "file")])
    # a chosen token with every symbol allowed: the client puts it in the file output's
    # URL unencoded, where a '+' must not be read as a space
    endpoint = sdk.create_deployment(pipeline, "files-" + ARGS["unique"], "endpoint",
                                     endpoint_token="chosen+token/with=all.~_-" + ARGS["unique"])
    with_token = sdk.trigger_endpoint("files-" + ARGS["unique"], endpoint["endpoint_token"],
                                      inputs={"data_file": io.BytesIO(b"12345"),
                                              "label": "doc"})
    with_sdk_token = sdk.trigger_endpoint("files-" + ARGS["unique"],
                                          inputs={"data_file": b"123", "label": "raw"})
    emit({"with_token": with_token["outputs"]["summary"].decode(),
          "with_sdk_token": with_sdk_token["outputs"]["summary"].decode()})
    sdk.delete_pipeline(pipeline, force_deployments_deletion=True)
    ''', unique=unique, folder=str(folder))
    assert found == {"with_token": "doc: 5 bytes", "with_sdk_token": "raw: 3 bytes"}
