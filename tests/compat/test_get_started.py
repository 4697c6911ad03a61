"""The documentation's Get Started parts 1-3 with craft-ai-sdk 0.50.1, unchanged: steps
from a local folder with requirements, pipelines, runs with inputs and outputs, the data
store from inside a step, metrics, logs, execution tracking, deletions."""

from __future__ import annotations

import io
import json

import pytest

HELLO = '''
import datetime


def helloWorld() -> None:
    start_date = datetime.datetime(2000, 1, 1)
    difference = datetime.datetime.now() - start_date
    print(f"Hello world! Number of days since January 1, 2000: {difference.days}")
'''

PREDICT = '''
import json
from io import BytesIO

from craft_ai_sdk import CraftAiSdk


def predictIris(input_data: dict, input_model_path: str, threshold: float):
    sdk = CraftAiSdk()
    buffer = BytesIO()
    sdk.download_data_store_object(input_model_path, buffer)
    model = json.loads(buffer.getvalue())
    predictions = {key: ("virginica" if row["petal length (cm)"] * model["w"] > threshold
                         else "setosa") for key, row in input_data.items()}
    sdk.record_metric_value("threshold", threshold)
    sdk.record_list_metric_values("scores", [row["petal length (cm)"]
                                             for row in input_data.values()])
    print(f"predicted {len(predictions)} rows")
    return {"predictions": predictions}


def report(data_file: dict, label: str):
    with open(data_file["path"]) as handle:
        lines = handle.read().splitlines()
    out = "report.txt"
    with open(out, "w") as handle:
        handle.write(f"{label}: {len(lines)} lines")
    return {"summary": {"path": out}, "count": len(lines)}
'''


@pytest.fixture(scope="module")
def get_started(tmp_path_factory):
    folder = tmp_path_factory.mktemp("get_started")
    (folder / "src").mkdir()
    (folder / "src" / "part-1-helloWorld.py").write_text(HELLO)
    (folder / "src" / "part-3-iris-predict.py").write_text(PREDICT)
    (folder / "requirements.txt").write_text("craft-ai-sdk==0.50.1\n")
    return folder


def test_part_1_hello_world(craft_sdk, get_started, unique) -> None:
    name = f"part-1-hello-world-{unique}"
    step = craft_sdk.create_step(
        step_name=name, function_path="src/part-1-helloWorld.py", function_name="helloWorld",
        container_config={"local_folder": str(get_started), "requirements_path": ""})
    assert step["creation_info"]["status"] == "ready"
    assert name in {s["step_name"] for s in craft_sdk.list_steps()}
    assert craft_sdk.get_step(name)["parameters"]["function_name"] == "helloWorld"
    craft_sdk.create_pipeline(pipeline_name=name, step_name=name)
    result = craft_sdk.run_pipeline(pipeline_name=name)
    assert result["outputs"] == {}
    logs = craft_sdk.get_pipeline_execution_logs(result["execution_id"])
    assert any(line["message"].startswith("Hello world!") for line in logs)
    executions = craft_sdk.list_pipeline_executions(name)
    assert result["execution_id"] in {e["execution_id"] for e in executions}
    assert craft_sdk.get_pipeline(name)["last_execution_id"] == result["execution_id"]
    craft_sdk.delete_pipeline_execution(result["execution_id"])
    assert craft_sdk.delete_pipeline(name)["pipeline"]["name"] == name
    assert craft_sdk.delete_step(name)["step_name"] == name
    assert craft_sdk.get_step(name) is None


def test_part_3_predictions_with_data_store_metrics_and_tracking(craft_sdk, get_started,
                                                                 unique) -> None:
    from craft_ai_sdk.io import Input, InputSource, Output

    model_path = f"get-started-{unique}/model.json"
    craft_sdk.upload_data_store_object(io.BytesIO(json.dumps({"w": 2}).encode()), model_path)
    name = f"part-3-irisio-{unique}"
    craft_sdk.create_step(
        step_name=name, function_path="src/part-3-iris-predict.py",
        function_name="predictIris",
        description="classifies the input data",
        inputs=[Input(name="input_data", data_type="json"),
                Input(name="input_model_path", data_type="string"),
                Input(name="threshold", data_type="number")],
        outputs=[Output(name="predictions", data_type="json")],
        container_config={"local_folder": str(get_started),
                          "requirements_path": "requirements.txt"},
    )
    craft_sdk.create_pipeline(pipeline_name=name, step_name=name)
    rows = {1: {"petal length (cm)": 5.7}, 2: {"petal length (cm)": 1.3}}
    result = craft_sdk.run_pipeline(
        pipeline_name=name, inputs={"input_data": rows, "input_model_path": model_path},
        inputs_mapping=[InputSource(pipeline_input_name="threshold", constant_value=5)])
    assert result["outputs"]["predictions"] == {"1": "virginica", "2": "setosa"}
    execution_id = result["execution_id"]

    execution = craft_sdk.get_pipeline_execution(execution_id)
    inputs = {i["pipeline_input_name"]: i for i in execution["inputs"]}
    assert inputs["threshold"]["source"] == "constant"
    assert inputs["input_model_path"]["value"] == model_path
    assert craft_sdk.get_pipeline_execution_output(execution_id, "predictions")["value"] == {
        "1": "virginica", "2": "setosa"}
    assert craft_sdk.get_pipeline_execution_input(execution_id, "threshold")["value"] == 5

    metrics = craft_sdk.get_metrics(name="threshold", pipeline_name=name)
    assert [(m["name"], m["value"], m["execution_id"]) for m in metrics] == [
        ("threshold", 5, execution_id)]
    scores = craft_sdk.get_list_metrics(name="scores", execution_id=execution_id)
    assert [m["value"] for m in scores] == [5.7, 1.3]
    logs = craft_sdk.get_pipeline_execution_logs(execution_id)
    assert any("predicted 2 rows" in line["message"] for line in logs)


def test_file_inputs_outputs_and_data_store_mappings(craft_sdk, get_started, unique) -> None:
    from craft_ai_sdk.io import Input, InputSource, Output, OutputDestination

    name = f"report-{unique}"
    craft_sdk.create_pipeline(
        pipeline_name=name, function_path="src/part-3-iris-predict.py",
        function_name="report",
        inputs=[Input(name="data_file", data_type="file"), Input(name="label", data_type="string")],
        outputs=[Output(name="summary", data_type="file"),
                 Output(name="count", data_type="number")],
        container_config={"local_folder": str(get_started),
                          "requirements_path": "requirements.txt"},
    )
    result = craft_sdk.run_pipeline(pipeline_name=name, inputs={
        "data_file": io.BytesIO(b"a\nb\nc\n"), "label": "letters"})
    assert result["outputs"]["count"] == 3
    assert result["outputs"]["summary"] == b"letters: 3 lines"

    craft_sdk.upload_data_store_object(io.BytesIO(b"x\ny\n"), f"reports-{unique}/in.txt")
    result = craft_sdk.run_pipeline(
        pipeline_name=name, inputs={"label": "store"},
        inputs_mapping=[InputSource(pipeline_input_name="data_file",
                                    datastore_path=f"reports-{unique}/in.txt")],
        outputs_mapping=[OutputDestination(pipeline_output_name="summary",
                                           datastore_path=f"reports-{unique}/{{execution_id}}.txt")])
    buffer = io.BytesIO()
    craft_sdk.download_data_store_object(f"reports-{unique}/{result['execution_id']}.txt", buffer)
    assert buffer.getvalue() == b"store: 2 lines"
    execution = craft_sdk.get_pipeline_execution(result["execution_id"])
    outputs = {o["pipeline_output_name"]: o for o in execution["outputs"]}
    assert outputs["summary"]["destination"] == "datastore"
    assert outputs["summary"]["value"] == b"store: 2 lines"
    craft_sdk.delete_pipeline(name)


def test_a_failed_run_raises_with_the_reason(craft_sdk, get_started, unique) -> None:
    from craft_ai_sdk.exceptions import SdkException
    from craft_ai_sdk.io import Input

    name = f"fails-{unique}"
    craft_sdk.create_pipeline(
        pipeline_name=name, function_path="src/part-3-iris-predict.py",
        function_name="report",
        inputs=[Input(name="data_file", data_type="file"), Input(name="label", data_type="string")],
        container_config={"local_folder": str(get_started),
                          "requirements_path": "requirements.txt"})
    with pytest.raises(SdkException) as caught:
        craft_sdk.run_pipeline(pipeline_name=name, inputs={"label": "no file"})
    assert caught.value.status_code == 400 and "data_file" in str(caught.value)
