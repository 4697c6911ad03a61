"""Steps, pipelines, runs and executions against a scripted server: what is sent, how
waits end (ready, failed, gone, timeout), the 307 long-poll and the reshaped results."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from gristmill import (
    CreationFailedError,
    CreationTimeoutError,
    ExecutionFailedError,
    Gristmill,
    GristmillError,
    InputSource,
    OutputDestination,
)
from gristmill.resources import _creation
from tests.sdk._scripted_server import Reply, ScriptedServer

PENDING = {"parameters": {"step_name": "s1"}, "creation_info": {"status": "creation_pending"}}
READY = {"parameters": {"step_name": "s1"}, "creation_info": {"status": "ready", "id": "x"}}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    monkeypatch.setattr(_creation, "POLL_FIRST_S", 0.01)
    monkeypatch.setattr(_creation, "POLL_MAX_S", 0.01)
    with ScriptedServer().running() as srv:
        srv.allow_login()
        yield srv


def client(server: ScriptedServer) -> Gristmill:
    return Gristmill(server.url, "gm_t_t", progress=False, max_retries=0)


def form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


# -- creation waits -------------------------------------------------------------------------


def test_206_waits_until_ready(server: ScriptedServer) -> None:
    server.script("POST /api/v1/steps", Reply(206, PENDING))
    server.script(
        "GET /api/v1/steps/s1", Reply(200, PENDING), Reply(200, PENDING), Reply(200, READY)
    )
    with client(server) as gm:
        step = gm.create_step("s1", "f.py", "f")
    assert step["creation_info"] == {"status": "ready"}
    assert server.paths().count("GET /api/v1/steps/s1") == 3


def test_creation_failed_shows_reason_and_build_log(server: ScriptedServer) -> None:
    failed = {"creation_info": {"status": "creation_failed", "status_reason": "pip failed"}}
    server.script("POST /api/v1/steps", Reply(206, PENDING))
    server.script("GET /api/v1/steps/s1", Reply(200, failed))
    server.script(
        "GET /api/v1/steps/s1/logs",
        Reply(200, {"logs": "Collecting nope\nERROR: No matching distribution found for nope"}),
    )
    with client(server) as gm, pytest.raises(CreationFailedError) as caught:
        gm.create_step("s1", "f.py", "f")
    assert caught.value.reason == "pip failed"
    text = str(caught.value)
    assert "pip failed" in text and "No matching distribution found for nope" in text


def test_build_log_is_optional(server: ScriptedServer) -> None:
    failed = {"creation_info": {"status": "creation_failed", "status_reason": "boom"}}
    server.script("POST /api/v1/pipelines", Reply(206, {}))
    server.script("GET /api/v1/pipelines/p1", Reply(200, failed))
    server.script("GET /api/v1/pipelines/p1/executions/latest", Reply(204))
    # no logs route scripted: 404, and the error is still raised with the reason
    with client(server) as gm, pytest.raises(CreationFailedError, match="boom"):
        gm.create_pipeline("p1", function_path="f.py", function_name="f")


def test_a_404_while_waiting_means_failed(server: ScriptedServer) -> None:
    server.script("POST /api/v1/steps", Reply(206, PENDING))
    server.script("GET /api/v1/steps/s1", Reply(404, {"message": "gone", "name": "NotFound"}))
    with client(server) as gm, pytest.raises(CreationFailedError, match="no longer knows"):
        gm.create_step("s1", "f.py", "f")


def test_failure_reported_by_the_post(server: ScriptedServer) -> None:
    server.script(
        "POST /api/v1/steps",
        Reply(
            400,
            {
                "message": "Creation of step 's1' failed: function missing",
                "name": "StepCreationFailed",
                "additional_data": {"build_log_tail": ["line 1", "ImportError: f"]},
            },
        ),
    )
    with client(server) as gm, pytest.raises(CreationFailedError) as caught:
        gm.create_step("s1", "f.py", "f")
    assert caught.value.build_log == ["line 1", "ImportError: f"]
    assert "ImportError: f" in str(caught.value)


def test_timeout(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]

    def clock() -> float:
        now[0] += 30.0  # every look at the clock is 30 s later
        return now[0]

    monkeypatch.setattr(_creation.time, "monotonic", clock)
    server.script("POST /api/v1/steps", Reply(206, PENDING))
    server.script("GET /api/v1/steps/s1", Reply(200, PENDING))
    with client(server) as gm, pytest.raises(CreationTimeoutError, match="get_step"):
        gm.create_step("s1", "f.py", "f", timeout_s=120)


# -- steps and pipelines --------------------------------------------------------------------


def test_get_step_none_on_404_and_delete_booleans(server: ScriptedServer) -> None:
    server.script("GET /api/v1/steps/nope", Reply(404, {"message": "no", "name": "NotFound"}))
    server.script("DELETE /api/v1/steps/s1", Reply(200, {"step_name": "s1"}))
    server.script("DELETE /api/v1/pipelines/p1", Reply(200, {"pipeline": {"name": "p1"}}))
    with client(server) as gm:
        assert gm.get_step("nope") is None
        gm.delete_step("s1", force_dependents_deletion=True)
        gm.delete_pipeline("p1")
    deletes = [s.path for s in server.seen if s.method == "DELETE"]
    assert deletes == [
        "/api/v1/steps/s1?force_dependents_deletion=True",
        "/api/v1/pipelines/p1?force_deployments_deletion=False",
    ]


def test_pipeline_from_a_step_is_json(server: ScriptedServer) -> None:
    server.script(
        "POST /api/v1/pipelines",
        Reply(201, {"pipeline_name": "p1", "pipeline_id": "i", "is_archived": False}),
    )
    with client(server) as gm:
        assert gm.create_pipeline("p1", "s1") == {"pipeline_name": "p1"}
    (post,) = [s for s in server.seen if s.path == "/api/v1/pipelines"]
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {"pipeline_name": "p1", "step_names": ["s1"]}


@pytest.mark.parametrize(
    ("latest", "expected"),
    [(Reply(204), None), (Reply(200, {}), None), (Reply(200, {"execution_id": "p1-2"}), "p1-2")],
)
def test_get_pipeline_adds_the_last_execution(
    server: ScriptedServer, latest: Reply, expected: str | None
) -> None:
    server.script("GET /api/v1/pipelines/p1", Reply(200, {"pipeline_name": "p1", "pipeline_id": 1}))
    server.script("GET /api/v1/pipelines/p1/executions/latest", latest)
    with client(server) as gm:
        assert gm.get_pipeline("p1") == {"pipeline_name": "p1", "last_execution_id": expected}


def test_hidden_step_pipeline_form_starts_with_its_name(server: ScriptedServer) -> None:
    server.script("POST /api/v1/pipelines", Reply(201, {"pipeline_name": "p1", "inputs": []}))
    with client(server) as gm:
        gm.create_pipeline("p1", function_path="f.py", function_name="f", description="d")
    (post,) = [s for s in server.seen if s.path == "/api/v1/pipelines"]
    assert post.body == b"pipeline_name=p1&function_path=f.py&function_name=f&description=d"


def test_download_step_folder(server: ScriptedServer, tmp_path: Path) -> None:
    server.script("GET /api/v1/steps/s1/download", Reply(200, {"signed_url": f"{server.url}/tgz"}))
    server.script("GET /tgz", Reply(200, b"archive-bytes"))
    with client(server) as gm:
        gm.download_step_local_folder("s1", str(tmp_path))
    assert (tmp_path / "s1.tgz").read_bytes() == b"archive-bytes"
    (download,) = [s for s in server.seen if s.path == "/tgz"]
    assert "authorization" not in download.headers


def test_download_folder_is_created_when_missing(server: ScriptedServer, tmp_path: Path) -> None:
    # docs/sdk.md and docs/steps-and-pipelines.md download into "downloads/" from scratch
    server.script("GET /api/v1/steps/s1/download", Reply(200, {"signed_url": f"{server.url}/tgz"}))
    server.script(
        "GET /api/v1/pipelines/p1/download", Reply(200, {"signed_url": f"{server.url}/tgz"})
    )
    server.script("GET /tgz", Reply(200, b"archive-bytes"))
    with client(server) as gm:
        gm.download_step_local_folder("s1", str(tmp_path / "downloads") + "/")
        gm.download_pipeline_local_folder("p1", tmp_path / "backup" / "nested")
    assert (tmp_path / "downloads" / "s1.tgz").read_bytes() == b"archive-bytes"
    assert (tmp_path / "backup" / "nested" / "p1.tgz").read_bytes() == b"archive-bytes"


def test_download_folder_that_is_a_file_is_refused(
    server: ScriptedServer, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("keep")
    with client(server) as gm, pytest.raises(ValueError, match="'folder' must be a folder"):
        gm.download_step_local_folder("s1", tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "keep"
    assert server.paths("GET /api/v1/steps/s1/download") == []


def test_no_folder_is_created_for_an_unknown_step(server: ScriptedServer, tmp_path: Path) -> None:
    server.script(
        "GET /api/v1/steps/nope/download", Reply(404, {"message": "no", "name": "NotFound"})
    )
    with client(server) as gm, pytest.raises(GristmillError):
        gm.download_step_local_folder("nope", tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists()


# -- runs -----------------------------------------------------------------------------------

PIPELINE = {
    "pipeline_name": "p1",
    "inputs": [
        {"input_name": "a", "data_type": "string"},
        {"input_name": "doc", "data_type": "file"},
    ],
}
OUTPUTS = {
    "outputs": [
        {"pipeline_output_name": "r", "data_type": "string", "mapping_type": "run", "value": "hi"},
        {"pipeline_output_name": "fo", "data_type": "file", "mapping_type": "run"},
        {"pipeline_output_name": "ds", "data_type": "file", "mapping_type": "datastore"},
        {"pipeline_output_name": "n", "data_type": "json", "mapping_type": "is_null"},
    ]
}


def script_run(server: ScriptedServer, *outputs: Reply) -> None:
    server.script("GET /api/v1/pipelines/p1", Reply(200, PIPELINE))
    server.script("POST /api/v1/pipelines/p1/run", Reply(201, {"execution_id": "p1-1"}))
    server.script("GET /api/v1/executions/p1-1/outputs", *outputs)
    server.script("GET /api/v1/executions/p1-1/outputs/fo", Reply(200, b"\x00file"))


def test_run_without_files_is_url_encoded_and_long_polls(server: ScriptedServer) -> None:
    script_run(server, Reply(307, {}), Reply(307, {}), Reply(200, OUTPUTS))
    with client(server) as gm:
        result = gm.run_pipeline(
            "p1",
            inputs={"a": "x", "extra": 1.5},
            inputs_mapping=[InputSource(pipeline_input_name="c", constant_value=5)],
            outputs_mapping=[OutputDestination(pipeline_output_name="ds", datastore_path="o/x")],
        )
    assert result == {
        "execution_id": "p1-1",
        "outputs": {"r": "hi", "fo": b"\x00file", "ds": None, "n": None},
    }
    (post,) = [s for s in server.seen if s.path == "/api/v1/pipelines/p1/run"]
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(post.body) == {
        "json_inputs": '{"a": "x", "extra": 1.5}',
        "inputs_mapping": '[{"pipeline_input_name": "c", "constant_value": 5}]',
        "outputs_mapping": '[{"pipeline_output_name": "ds", "datastore_path": "o/x"}]',
    }
    polls = [s.path for s in server.seen if s.path.startswith("/api/v1/executions/p1-1/outputs?")]
    assert polls == ["/api/v1/executions/p1-1/outputs?wait_for_results=true"] * 3


def test_run_with_a_file_is_multipart(server: ScriptedServer, tmp_path: Path) -> None:
    script_run(server, Reply(200, {"outputs": []}))
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"%PDF")
    with client(server) as gm:
        gm.run_pipeline("p1", inputs={"a": "x", "doc": str(doc)})
        gm.run_pipeline("p1", inputs={"doc": io.BytesIO(b"mem")})
    posts = [s for s in server.seen if s.path == "/api/v1/pipelines/p1/run"]
    assert all(p.headers["content-type"].startswith("multipart/form-data") for p in posts)
    assert b'name="json_inputs"\r\n\r\n{"a": "x"}\r\n' in posts[0].body
    assert b'name="doc"; filename="report.pdf"' in posts[0].body and b"%PDF" in posts[0].body
    assert b'name="doc"; filename="doc"' in posts[1].body
    assert b'name="json_inputs"\r\n\r\n{}\r\n' in posts[1].body


def test_a_failed_execution_is_raised_with_its_message(server: ScriptedServer) -> None:
    failure = {
        "message": "Execution p1-1 failed: ZeroDivisionError: division by zero",
        "name": "ExecutionFailed",
        "additional_data": {"execution_id": "p1-1", "status": "Failed"},
    }
    script_run(server, Reply(307, {}), Reply(500, failure))
    with client(server) as gm, pytest.raises(ExecutionFailedError, match="ZeroDivisionError"):
        gm.run_pipeline("p1")


def test_bad_run_arguments(server: ScriptedServer) -> None:
    script_run(server, Reply(200, {"outputs": []}))
    with client(server) as gm:
        with pytest.raises(TypeError, match="file input"):
            gm.run_pipeline("p1", inputs={"doc": 42})
        with pytest.raises(ValueError, match="InputSource"):
            gm.run_pipeline("p1", inputs_mapping=[{"pipeline_input_name": "a"}])  # type: ignore[list-item]


# -- executions -----------------------------------------------------------------------------

EXECUTION: dict[str, Any] = {
    "execution_id": "p1-1",
    "status": "Succeeded",
    "inputs": [
        {
            "pipeline_input_name": "a",
            "data_type": "string",
            "mapping_type": "constant",
            "mapping_value": {"constant_value": "x", "is_required": True},
            "value": "x",
        },
        {
            "pipeline_input_name": "doc",
            "data_type": "file",
            "mapping_type": "run",
            "mapping_value": {"run_input_name": "doc"},
        },
        {
            "pipeline_input_name": "d",
            "data_type": "file",
            "mapping_type": "datastore",
            "mapping_value": {"datastore_path": "in/d"},
        },
    ],
    "outputs": [
        {
            "pipeline_output_name": "r",
            "data_type": "string",
            "mapping_type": "run",
            "mapping_value": {"run_output_name": "r"},
            "value": "hi",
        },
        {
            "pipeline_output_name": "ds",
            "data_type": "file",
            "mapping_type": "datastore",
            "mapping_value": {"datastore_path": "out/p1-1"},
        },
    ],
}


def test_get_pipeline_execution_reshapes_and_fetches_files(server: ScriptedServer) -> None:
    server.script("GET /api/v1/executions/p1-1", Reply(200, EXECUTION))
    server.script("GET /api/v1/executions/p1-1/inputs/doc", Reply(200, b"in-bytes"))
    server.script("GET /api/v1/executions/p1-1/outputs/ds", Reply(200, b"out-bytes"))
    with client(server) as gm:
        execution = gm.get_pipeline_execution("p1-1")
    assert execution["inputs"] == [
        {
            "pipeline_input_name": "a",
            "data_type": "string",
            "constant_value": "x",
            "source": "constant",
            "value": "x",
        },
        {"pipeline_input_name": "doc", "data_type": "file", "source": "run", "value": b"in-bytes"},
        {
            "pipeline_input_name": "d",
            "data_type": "file",
            "datastore_path": "in/d",
            "source": "datastore",
            "value": None,
        },
    ]
    assert execution["outputs"] == [
        {"pipeline_output_name": "r", "data_type": "string", "destination": "run", "value": "hi"},
        {
            "pipeline_output_name": "ds",
            "data_type": "file",
            "datastore_path": "out/p1-1",
            "destination": "datastore",
            "value": b"out-bytes",
        },
    ]


def test_one_output_and_a_missing_one(server: ScriptedServer) -> None:
    server.script("GET /api/v1/executions/p1-1", Reply(200, EXECUTION))
    # A non-file value is its JSON document, quotes included (contract §3.9).
    server.script(
        "GET /api/v1/executions/p1-1/outputs/r",
        Reply(200, b'"hi"', {"Content-Type": "application/json"}),
    )
    with client(server) as gm:
        output = gm.get_pipeline_execution_output("p1-1", "r")
        with pytest.raises(GristmillError, match="no output 'zz'"):
            gm.get_pipeline_execution_output("p1-1", "zz")
    assert output == {
        "pipeline_output_name": "r",
        "data_type": "string",
        "destination": "run",
        "value": "hi",
    }
    first = [s.path for s in server.seen if s.path.startswith("/api/v1/executions/p1-1?")]
    assert first[0] == "/api/v1/executions/p1-1?include_io_values=false"


def test_logs_request_and_first_step(server: ScriptedServer) -> None:
    from datetime import datetime, timezone

    lines = [{"timestamp": "2024-01-01T00:00:00.000Z", "message": "hello"}]
    server.script(
        "POST /api/v1/executions/p1-1/logs", Reply(200, [lines, [{"message": "x"}]]), Reply(200, [])
    )
    with client(server) as gm:
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        assert gm.get_pipeline_execution_logs("p1-1", from_datetime=start, limit=10) == lines
        assert gm.get_pipeline_execution_logs(pipeline_name="p1", execution_id="p1-1") == []
    bodies = [json.loads(s.body) for s in server.seen if s.path.endswith("/logs")]
    assert bodies == [{"from": 1704067200000, "limit": 10}, {}]
