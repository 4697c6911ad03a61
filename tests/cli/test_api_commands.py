"""The daily commands (`gristmill steps|pipelines|deployments|executions|env|datastore`)
end to end against a running environment, configured only by environment variables."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gristmill import Gristmill, Input, Output
from gristmill.cli.app import app
from tests.conftest import GristmillEnv

STEP_CODE = """
def greet(name, times=1):
    for _ in range(times):
        print(f"hello {name}")
    return {"greeting": f"hello {name}", "times": times}
"""


@pytest.fixture
def cli(gristmill_env: GristmillEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for var in ("GRISTMILL_ENVIRONMENT_URL", "GRISTMILL_SDK_TOKEN", "CRAFT_AI_ENVIRONMENT_URL",
                "CRAFT_AI_SDK_TOKEN", "CRAFT_AI_CONTROL_URL", "GRISTMILL_CONTROL_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GRISTMILL_ENVIRONMENT_URL", gristmill_env.url)
    monkeypatch.setenv("GRISTMILL_SDK_TOKEN", gristmill_env.sdk_token)
    # the commands must never touch a data directory: point HOME somewhere empty
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.stdout + result.stderr
        return result

    yield run
    assert not (tmp_path / "home").exists()


@pytest.fixture
def pipeline(gristmill_env: GristmillEnv, tmp_path: Path, unique: str) -> str:
    code = tmp_path / "code"
    code.mkdir()
    (code / "steps.py").write_text(textwrap.dedent(STEP_CODE))
    name = f"cli-{unique}"
    with Gristmill(gristmill_env.url, gristmill_env.sdk_token, progress=False) as gm:
        gm.create_step(step_name=name, function_path="steps.py", function_name="greet",
                       inputs=[Input(name="name", data_type="string"),
                               Input(name="times", data_type="number", is_required=False,
                                     default_value=1)],
                       outputs=[Output(name="greeting", data_type="string"),
                                Output(name="times", data_type="number")],
                       container_config={"local_folder": str(code)})
        gm.create_pipeline(pipeline_name=name, step_name=name)
    return name


def test_steps_pipelines_run_executions_and_logs(cli, pipeline: str, tmp_path: Path) -> None:
    listed = cli("steps", "list").stdout.splitlines()
    assert listed[0].split("\t")[:2] == ["step_name", "status"]
    assert any(line.startswith(f"{pipeline}\t") for line in listed)
    step = json.loads(cli("steps", "get", pipeline, "--output", "json").stdout)
    assert step["parameters"]["function_name"] == "greet"
    pipelines = json.loads(cli("pipelines", "list", "-o", "json").stdout)
    assert pipeline in [p["pipeline_name"] for p in pipelines]
    assert f"pipeline_name\t{pipeline}" in cli("pipelines", "get", pipeline).stdout

    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"name": "from-file", "times": 1}))
    run = json.loads(cli("pipelines", "run", pipeline, "--inputs-file", str(inputs_file),
                         "--input", "times=2", "--input", "name=Ada", "-o", "json").stdout)
    assert run["outputs"] == {"greeting": "hello Ada", "times": 2}
    execution_id = run["execution_id"]
    plain = cli("pipelines", "run", pipeline, "--input", "name=Bob").stdout
    assert "output.greeting\thello Bob" in plain
    second_id = plain.splitlines()[0].split("\t")[1]

    rows = cli("executions", "list", "--pipeline", pipeline).stdout.splitlines()
    ids = [row.split("\t")[0] for row in rows[1:]]
    assert ids == [second_id, execution_id]  # newest first, every id in full
    assert execution_id in cli("executions", "list").stdout
    got = json.loads(cli("executions", "get", execution_id, "-o", "json").stdout)
    assert got["status"] == "Succeeded" and got["pipeline_name"] == pipeline

    logs = cli("executions", "logs", execution_id).stdout
    assert logs.count("hello Ada") == 2
    followed = cli("executions", "logs", execution_id, "--follow", "-o", "json").stdout
    lines = [json.loads(line) for line in followed.splitlines()]
    assert [line["message"] for line in lines].count("hello Ada") == 2  # ended, no repeats

    assert json.loads(cli("executions", "delete", second_id, "-o", "json").stdout) == {
        "execution_id": second_id}
    cli("executions", "get", second_id, code=1)

    cli("steps", "delete", pipeline, code=1)  # used by the pipeline: refused, says so
    assert f"Deleted pipeline {pipeline}." in cli("pipelines", "delete", pipeline).stdout
    cli("steps", "delete", pipeline)
    missing = cli("steps", "get", pipeline, code=1)
    assert "not found" in missing.stderr


def test_deployments_and_token_rotation(cli, gristmill_env: GristmillEnv, pipeline: str
                                        ) -> None:
    import httpx

    name = f"ep-{pipeline}"
    with Gristmill(gristmill_env.url, gristmill_env.sdk_token, progress=False) as gm:
        created = gm.create_deployment(pipeline_name=pipeline, deployment_name=name,
                                       execution_rule="endpoint")
    old_token = created["endpoint_token"]
    rows = cli("deployments", "list").stdout.splitlines()
    assert any(row.startswith(f"{name}\t{pipeline}\tendpoint") for row in rows)
    got = json.loads(cli("deployments", "get", name, "-o", "json").stdout)
    assert got["name"] == name

    new_token = cli("deployments", "rotate-token", name).stdout.strip()
    assert new_token and new_token != old_token
    call = f"{gristmill_env.url}/endpoints/{name}"
    assert httpx.post(call, json={"name": "x"}, timeout=60,
                      headers={"Authorization": f"EndpointToken {old_token}"}).status_code == 401
    answered = httpx.post(call, json={"name": "x"}, timeout=60,
                          headers={"Authorization": f"EndpointToken {new_token}"})
    assert answered.status_code == 200, answered.text
    rotated = json.loads(cli("deployments", "rotate-token", name, "-o", "json").stdout)
    assert rotated["endpoint_token"] not in (old_token, new_token)

    cli("deployments", "delete", name)
    cli("deployments", "get", name, code=1)
    cli("pipelines", "delete", pipeline, "--force")


def test_env_and_datastore(cli, unique: str, tmp_path: Path) -> None:
    var = f"CLI_{unique.upper()}"
    cli("env", "set", var, "v1")
    assert cli("env", "get", var).stdout.strip() == "v1"
    assert {"name": var, "value": "v1"} in json.loads(cli("env", "list", "-o", "json").stdout)
    cli("env", "delete", var)
    assert "not found" in cli("env", "get", var, code=1).stderr

    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00payload\xff" * 1000)
    remote = f"cli-{unique}/data.bin"
    cli("datastore", "upload", str(local), remote)
    listed = cli("datastore", "ls", f"cli-{unique}/").stdout.splitlines()
    assert listed[1].split("\t")[:2] == [remote, str(local.stat().st_size)]
    info = json.loads(cli("datastore", "get", remote, "-o", "json").stdout)
    assert info["size"] == local.stat().st_size
    copy = tmp_path / "copy.bin"
    cli("datastore", "download", remote, str(copy))
    assert copy.read_bytes() == local.read_bytes()
    # a destination that cannot be the file: the SDK's message, no traceback
    for where, words in ((tmp_path, "it is a folder"),
                         (tmp_path / "no" / "x.bin", "does not exist")):
        result = cli("datastore", "download", remote, str(where), code=1)
        assert "Traceback" not in result.stderr and words in result.stderr, result.stderr
    cli("datastore", "rm", remote)
    assert json.loads(cli("datastore", "ls", f"cli-{unique}/", "-o", "json").stdout) == []
    assert "is not a file" in cli("datastore", "upload", str(tmp_path / "nope"), remote,
                                  code=2).stderr


def test_bad_input_and_missing_configuration(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "not NAME=VALUE" in cli("pipelines", "run", "p", "--input", "novalue",
                                   code=2).stderr
    monkeypatch.delenv("GRISTMILL_ENVIRONMENT_URL")
    result = cli("steps", "list", code=1)
    assert "GRISTMILL_ENVIRONMENT_URL" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setenv("CRAFT_AI_ENVIRONMENT_URL", "http://127.0.0.1:1")
    result = cli("env", "list", code=1)
    assert "Traceback" not in result.stderr


def test_craft_ai_variables_are_enough(cli, gristmill_env: GristmillEnv,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRISTMILL_ENVIRONMENT_URL")
    monkeypatch.delenv("GRISTMILL_SDK_TOKEN")
    monkeypatch.setenv("CRAFT_AI_ENVIRONMENT_URL", gristmill_env.url)
    monkeypatch.setenv("CRAFT_AI_SDK_TOKEN", gristmill_env.sdk_token)
    assert cli("env", "list").stdout.startswith("name\tvalue")


def test_follow_prints_each_line_once_as_it_comes() -> None:
    from datetime import datetime, timezone

    from gristmill.cli.api_cmds import follow_logs

    def at(second: int) -> str:
        return f"2026-01-01T00:00:0{second}.000Z"

    # what the execution has written by each poll: lines sharing a time, some arriving late
    written_by_poll = [
        [(0, "a"), (0, "a")],
        [(0, "a"), (0, "a"), (0, "a"), (1, "b")],
        [(0, "a"), (0, "a"), (0, "a"), (1, "b"), (1, "b"), (2, "c")],
    ]
    polls = iter(written_by_poll)
    since_asked: list[datetime | None] = []

    def fetch(since):
        since_asked.append(since)
        lines = next(polls)
        start = since.second if since else 0
        return [{"timestamp": at(s), "message": m} for s, m in lines if s >= start]

    ended = iter([False, False, True])
    printed: list[dict] = []
    follow_logs(fetch, lambda: next(ended), printed.append, poll_s=0)
    assert [(line["timestamp"], line["message"]) for line in printed] == [
        (at(0), "a"), (at(0), "a"), (at(0), "a"), (at(1), "b"), (at(1), "b"), (at(2), "c")]
    assert since_asked[1] == datetime(2026, 1, 1, tzinfo=timezone.utc)
