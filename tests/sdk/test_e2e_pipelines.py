"""Steps, pipelines, runs, executions and metrics against the real control service (local
workers), following the platform documentation's Get Started parts 1-3."""

from __future__ import annotations

import datetime
import importlib.util
import io
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gristmill import (
    CreationFailedError,
    ExecutionFailedError,
    Gristmill,
    Input,
    InputSource,
    NotFoundError,
    Output,
    OutputDestination,
)
from tests.conftest import GristmillEnv, start_environment
from tests.sdk.conftest import RequestLog


def _routes_ready() -> bool:
    """The server side of these routes is written alongside the SDK."""
    try:
        return importlib.util.find_spec("gristmill_platform.steps.routes") is not None
    except ModuleNotFoundError:
        return False


pytestmark = pytest.mark.skipif(
    not _routes_ready(), reason="the platform's step/pipeline routes are not there yet"
)

STEP_CODE = """
import datetime


def hello_world():
    start = datetime.datetime(2000, 1, 1)
    print(f"Hello world! Days since 2000: {(datetime.datetime.now() - start).days}")


def predict(input_data, input_model_path, scale=2, flag=False, tags=None):
    from gristmill import Gristmill

    sdk = Gristmill()
    sdk.record_metric_value("accuracy", 0.75)
    sdk.record_list_metric_values("loss", [1.0, 0.5])
    sdk.record_list_metric_values("loss", 0.25)
    values = [v * scale for v in input_data["values"]]
    return {"predictions": {"values": values, "model": input_model_path},
            "count": len(values), "ok": not flag, "tags": tags or []}


def upper(doc):
    with open(doc["path"], "rb") as f:
        content = f.read()
    with open("upper.txt", "wb") as f:
        f.write(content.upper())
    return {"result": {"path": "upper.txt"}}


def read_config(setting, nothing=None):
    return {"echo": f"{setting}|{nothing}"}


def divide():
    return {"value": 1 / 0}
"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    root = tmp_path / "get_started"
    (root / "src").mkdir(parents=True)
    (root / "src" / "steps.py").write_text(textwrap.dedent(STEP_CODE))
    (root / "README.md").write_text("Get started\n")
    return root


def _config(code: Path, **extra: object) -> dict[str, object]:
    return {"local_folder": str(code), **extra}


def test_part_1_hello_world(gm: Gristmill, code: Path, unique: str, tmp_path: Path) -> None:
    name = f"hello-{unique}"
    step = gm.create_step(
        step_name=name,
        function_path="src/steps.py",
        function_name="hello_world",
        container_config=_config(code),
    )
    assert step["parameters"]["step_name"] == name
    assert step["creation_info"]["status"] == "ready"
    assert step["creation_info"]["origin"] == "local"
    assert "id" not in step["creation_info"]
    assert any(s["step_name"] == name for s in gm.list_steps())
    got = gm.get_step(name)
    assert got is not None and got["parameters"]["function_name"] == "hello_world"

    pipeline = gm.create_pipeline(pipeline_name=name, step_name=name)
    assert pipeline["pipeline_name"] == name
    assert "pipeline_id" not in pipeline and "is_archived" not in pipeline
    fetched = gm.get_pipeline(name)
    assert fetched is not None and fetched["last_execution_id"] is None
    assert any(p["pipeline_name"] == name for p in gm.list_pipelines())

    run = gm.run_pipeline(pipeline_name=name)
    assert run["outputs"] == {}
    execution_id = run["execution_id"]
    fetched = gm.get_pipeline(name)
    assert fetched is not None and fetched["last_execution_id"] == execution_id

    executions = gm.list_pipeline_executions(pipeline_name=name)
    assert [e["execution_id"] for e in executions] == [execution_id]
    execution = gm.get_pipeline_execution(execution_id)
    assert execution["pipeline_name"] == name
    assert execution["inputs"] == [] and execution["outputs"] == []
    logs = gm.get_pipeline_execution_logs(execution_id)
    assert any("Hello world!" in line["message"] for line in logs)
    assert all({"timestamp", "message"} <= line.keys() for line in logs)
    assert len(gm.get_pipeline_execution_logs(execution_id, limit=1)) == 1
    later = datetime.datetime.now() + datetime.timedelta(hours=1)
    assert gm.get_pipeline_execution_logs(execution_id, from_datetime=later) == []

    gm.download_step_local_folder(name, str(tmp_path))
    with tarfile.open(tmp_path / f"{name}.tgz", mode="r:gz") as tar:
        assert "src/steps.py" in tar.getnames()

    # Get Started part 2: delete the pipeline, then the step.
    assert gm.delete_pipeline_execution(execution_id) == {"execution_id": execution_id}
    assert gm.delete_pipeline(pipeline_name=name)["pipeline"]["name"] == name
    assert gm.delete_step(step_name=name)["step_name"] == name
    assert gm.get_step(name) is None
    assert gm.get_pipeline(name) is None


def test_part_3_inputs_outputs_and_metrics(gm: Gristmill, code: Path, unique: str) -> None:
    name = f"io-{unique}"
    gm.create_step(
        step_name=name,
        function_path="src/steps.py",
        function_name="predict",
        description="doubles values",
        inputs=[
            Input(name="input_data", data_type="json"),
            Input(name="input_model_path", data_type="string"),
            Input(name="scale", data_type="number", default_value=3, is_required=False),
            Input(name="flag", data_type="boolean", default_value=False, is_required=False),
            Input(name="tags", data_type="array", is_required=False),
        ],
        outputs=[
            Output(name="predictions", data_type="json"),
            Output(name="count", data_type="number"),
            Output(name="ok", data_type="boolean"),
            Output(name="tags", data_type="array"),
        ],
        container_config=_config(code),
    )
    pipeline = gm.create_pipeline(pipeline_name=name, step_name=name)
    assert {i["input_name"]: i["data_type"] for i in pipeline["inputs"]} == {
        "input_data": "json",
        "input_model_path": "string",
        "scale": "number",
        "flag": "boolean",
        "tags": "array",
    }

    result = gm.run_pipeline(
        pipeline_name=name,
        inputs={
            "input_data": {"values": [1, 2.5]},
            "input_model_path": "get_started/models/iris_knn_model.joblib",
            "tags": ["a", "b"],
        },
    )
    outputs = result["outputs"]
    assert outputs["predictions"] == {
        "values": [3, 7.5],
        "model": "get_started/models/iris_knn_model.joblib",
    }
    assert (outputs["count"], outputs["ok"], outputs["tags"]) == (2, True, ["a", "b"])

    execution_id = result["execution_id"]
    out = gm.get_pipeline_execution_output(execution_id, "count")
    assert (out["pipeline_output_name"], out["destination"], out["value"]) == ("count", "run", 2)
    inp = gm.get_pipeline_execution_input(execution_id, "input_data")
    assert (inp["source"], inp["value"]) == ("run", {"values": [1, 2.5]})
    execution = gm.get_pipeline_execution(execution_id)
    by_name = {i["pipeline_input_name"]: i for i in execution["inputs"]}
    assert by_name["input_model_path"]["value"] == "get_started/models/iris_knn_model.joblib"

    metrics = gm.get_metrics(execution_id=execution_id)
    assert [(m["name"], m["value"]) for m in metrics] == [("accuracy", 0.75)]
    assert metrics[0]["pipeline_name"] == name
    assert gm.get_metrics(name="accuracy", pipeline_name=name) == metrics
    loss = gm.get_list_metrics(name="loss", execution_id=execution_id)
    assert [m["value"] for m in loss] == [1.0, 0.5, 0.25]

    gm.delete_pipeline(name)
    gm.delete_step(name)


def test_pipeline_from_a_function_with_files(gm: Gristmill, code: Path, unique: str) -> None:
    name = f"files-{unique}"
    pipeline = gm.create_pipeline(
        pipeline_name=name,
        function_path="src/steps.py",
        function_name="upper",
        inputs=[Input("doc", "file")],
        outputs=[Output("result", "file")],
        container_config=_config(code, included_folders=["src"]),
    )
    assert pipeline["creation_info"]["status"] == "ready"
    assert [o["output_name"] for o in pipeline["outputs"]] == ["result"]

    result = gm.run_pipeline(name, inputs={"doc": io.BytesIO(b"hello file")})
    assert result["outputs"]["result"] == b"HELLO FILE"
    execution = gm.get_pipeline_execution(result["execution_id"])
    assert execution["inputs"][0]["value"] == b"hello file"
    assert execution["outputs"][0]["value"] == b"HELLO FILE"

    # Data store in and out, with a path placeholder filled in by the platform.
    gm.upload_data_store_object(io.BytesIO(b"from the store"), f"e2e-{unique}/in.txt")
    result = gm.run_pipeline(
        name,
        inputs_mapping=[
            InputSource(pipeline_input_name="doc", datastore_path=f"e2e-{unique}/in.txt")
        ],
        outputs_mapping=[
            OutputDestination(
                pipeline_output_name="result",
                datastore_path=f"e2e-{unique}/out-{{execution_id}}.txt",
            )
        ],
    )
    assert result["outputs"] == {"result": None}
    stored = io.BytesIO()
    gm.download_data_store_object(f"e2e-{unique}/out-{result['execution_id']}.txt", stored)
    assert stored.getvalue() == b"FROM THE STORE"
    gm.delete_pipeline(name)


def test_constant_environment_variable_and_null_sources(
    gm: Gristmill, code: Path, unique: str
) -> None:
    name = f"mapping-{unique}"
    gm.create_pipeline(
        name,
        function_path="src/steps.py",
        function_name="read_config",
        inputs=[Input("setting", "string"), Input("nothing", "string", is_required=False)],
        outputs=[Output("echo", "string")],
        container_config=_config(code),
    )
    variable = f"E2E_{unique.upper()}"
    gm.create_or_update_environment_variable(variable, "from-env")
    try:
        by_env = gm.run_pipeline(
            name,
            inputs_mapping=[
                InputSource(pipeline_input_name="setting", environment_variable_name=variable),
                InputSource(pipeline_input_name="nothing", is_null=True),
            ],
        )
        assert by_env["outputs"]["echo"] == "from-env|None"
        constant = gm.run_pipeline(
            name,
            inputs_mapping=[InputSource(pipeline_input_name="setting", constant_value="c")],
        )
        assert constant["outputs"]["echo"] == "c|None"
        shown = gm.get_pipeline_execution_input(constant["execution_id"], "setting")
        assert (shown["source"], shown["constant_value"]) == ("constant", "c")
    finally:
        gm.delete_environment_variable(variable)
        gm.delete_pipeline(name)


def test_a_failing_execution_raises_with_the_error(gm: Gristmill, code: Path, unique: str) -> None:
    name = f"fails-{unique}"
    gm.create_pipeline(
        name, function_path="src/steps.py", function_name="divide", container_config=_config(code)
    )
    with pytest.raises(ExecutionFailedError, match="ZeroDivisionError"):
        gm.run_pipeline(name)
    (execution,) = gm.list_pipeline_executions(name)
    assert execution["status"] == "Failed"
    gm.delete_pipeline(name)


def test_a_failing_build_shows_its_log(gm: Gristmill, code: Path, unique: str) -> None:
    (code / "requirements.txt").write_text("./no-such-local-package\n")
    name = f"badbuild-{unique}"
    with pytest.raises(CreationFailedError) as caught:
        gm.create_step(
            name,
            "src/steps.py",
            "hello_world",
            container_config=_config(code, requirements_path="requirements.txt"),
            timeout_s=120,
        )
    assert caught.value.reason
    assert "no-such-local-package" in str(caught.value)


def test_unknown_names(gm: Gristmill, unique: str) -> None:
    assert gm.get_step(f"nope-{unique}") is None
    assert gm.get_pipeline(f"nope-{unique}") is None
    with pytest.raises(NotFoundError):
        gm.run_pipeline(f"nope-{unique}")
    with pytest.raises(NotFoundError):
        gm.get_pipeline_execution(f"nope-{unique}")


def test_deleting_a_step_in_use(gm: Gristmill, code: Path, unique: str) -> None:
    name = f"used-{unique}"
    gm.create_step(name, "src/steps.py", "hello_world", container_config=_config(code))
    gm.create_pipeline(name, step_name=name)
    with pytest.raises(Exception) as refused:  # noqa: PT011 (the platform picks the status)
        gm.delete_step(name)
    assert gm.get_step(name) is not None, refused.value
    gm.delete_step(name, force_dependents_deletion=True)
    assert gm.get_step(name) is None
    assert gm.get_pipeline(name) is None


# -- builds that outlast the creation request: 206, then polling ------------------------------


@pytest.fixture(scope="module")
def slow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GristmillEnv]:
    """The platform answers creations at once (206) and holds long-polls briefly."""
    data_dir = tmp_path_factory.mktemp("env-slow-builds")
    server, env, _ = start_environment(
        data_dir,
        f"sqlite:///{data_dir / 'db.sqlite3'}",
        step_build_wait_s=0,
        long_poll_s=0.05,
    )
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def slow_gm(slow_env: GristmillEnv, request_log: RequestLog) -> Iterator[Gristmill]:
    http = httpx.Client(timeout=60, event_hooks={"request": [request_log]})
    with Gristmill(slow_env.url, slow_env.sdk_token, progress=False, http_client=http) as client:
        yield client
    http.close()


def test_a_206_creation_is_waited_for(
    slow_gm: Gristmill, request_log: RequestLog, code: Path, unique: str
) -> None:
    name = f"slow-{unique}"
    step = slow_gm.create_step(name, "src/steps.py", "hello_world", container_config=_config(code))
    assert step["creation_info"]["status"] == "ready"
    assert f"GET /api/v1/steps/{name}" in request_log.paths()

    pipeline = slow_gm.create_pipeline(
        f"{name}-p",
        function_path="src/steps.py",
        function_name="hello_world",
        container_config=_config(code),
    )
    assert pipeline["creation_info"]["status"] == "ready"
    assert pipeline["last_execution_id"] is None
    assert slow_gm.run_pipeline(f"{name}-p")["outputs"] == {}


def test_a_failed_build_seen_while_polling(slow_gm: Gristmill, code: Path, unique: str) -> None:
    (code / "requirements.txt").write_text("./no-such-local-package\n")
    with pytest.raises(CreationFailedError) as caught:
        slow_gm.create_step(
            f"slowbad-{unique}",
            "src/steps.py",
            "hello_world",
            container_config=_config(code, requirements_path="requirements.txt"),
        )
    assert caught.value.reason
    assert any("no-such-local-package" in line for line in caught.value.build_log)
