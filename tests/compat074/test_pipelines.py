"""craft-ai-sdk 0.74.7: pipelines straight from code (local folder and Git), runs with
inputs and mappings, executions, logs, metrics recorded from inside the step, file inputs
and outputs, deletions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.platform.stepkit import git_repo

CODE = '''
import os
import sys

# the step borrows craft-ai-sdk 0.74.7 from the tests' client virtualenv (its path is an
# environment variable of the environment) instead of installing it in each step
sys.path.append(os.environ["CRAFT074_SITE"])


def scale(rows: dict, factor: float, label: str = "rows") -> dict:
    from craft_ai_sdk import CraftAiSdk

    sdk = CraftAiSdk()
    sdk.record_metric_value("factor", factor)
    sdk.record_list_metric_values("scaled", [value * factor for value in rows.values()])
    print(f"{label}: {len(rows)} rows")
    return {"scaled": {key: value * factor for key, value in rows.items()},
            "count": len(rows)}


def report(data_file: dict, title: str) -> dict:
    with open(data_file["path"]) as handle:
        lines = handle.read().splitlines()
    with open("report.txt", "w") as handle:
        handle.write(f"{title}: {len(lines)} lines")
    return {"summary": {"path": "report.txt"}, "lines": len(lines)}
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compat074")
    (root / "src").mkdir()
    (root / "src" / "steps.py").write_text(CODE)
    (root / "README.md").write_text("not needed by the step\n")
    return root


@pytest.fixture
def client_site_variable(client, client_site) -> None:
    client('''sdk.create_or_update_environment_variable("CRAFT074_SITE", ARGS["site"])
emit(True)''', site=client_site)


def test_pipeline_from_local_folder_runs_and_is_tracked(client, client_site_variable,
                                                        folder, unique) -> None:
    found = client('''
    from craft_ai_sdk.io import Input, InputSource, Output

    name = "scale-" + ARGS["unique"]
    created = sdk.create_pipeline(
        name, function_path="src/steps.py", function_name="scale",
        description="scales rows",
        container_config={"local_folder": ARGS["folder"]},
        inputs=[Input("rows", "json"), Input("factor", "number"),
                Input("label", "string", is_required=False, default_value="rows")],
        outputs=[Output("scaled", "json"), Output("count", "number")],
        wait_for_completion=True, timeout_s=600)
    listed = [p["pipeline_name"] for p in sdk.list_pipelines()]
    run = sdk.run_pipeline(name, inputs={"rows": {"a": 1, "b": 2.5}, "label": "sample"},
                           inputs_mapping=[InputSource(pipeline_input_name="factor",
                                                       constant_value=2)])
    started = sdk.run_pipeline(name, inputs={"rows": {"c": 3}, "factor": 10},
                               wait_for_completion=False)
    later = sdk.retrieve_pipeline_execution_outputs(started["execution_id"])
    execution = sdk.get_pipeline_execution(run["execution_id"])
    emit({
        "created": created, "listed": listed, "run": run, "started": started, "later": later,
        "pipeline": sdk.get_pipeline(name),
        "executions": [e["execution_id"] for e in sdk.list_pipeline_executions(name)],
        "execution": execution,
        "output": sdk.get_pipeline_execution_output(run["execution_id"], "scaled"),
        "input": sdk.get_pipeline_execution_input(run["execution_id"], "factor"),
        "logs": sdk.get_pipeline_execution_logs(run["execution_id"]),
        "build_logs": sdk.get_pipeline_logs(name),
        "build_logs_2": sdk.get_pipeline_logs(name, limit=2),
        "metrics": sdk.get_metrics(name="factor", pipeline_name=name),
        "list_metrics": sdk.get_list_metrics(name="scaled",
                                             execution_id=run["execution_id"]),
        "deleted_execution": sdk.delete_pipeline_execution(started["execution_id"]),
        "executions_after": [e["execution_id"] for e in sdk.list_pipeline_executions(name)],
        "deleted": sdk.delete_pipeline(name),
        "gone": error_of(sdk.get_pipeline, name),
    })
    ''', unique=unique, folder=str(folder))
    name = f"scale-{unique}"
    created = found["created"]
    assert created["creation_info"]["status"] == "ready"
    assert created["creation_info"]["origin"] == "local"
    assert created["creation_info"]["last_execution_id"] is None
    parameters = created["parameters"]
    assert parameters["pipeline_name"] == name and parameters["description"] == "scales rows"
    assert parameters["function_path"] == "src/steps.py"
    assert [(i["name"], i["data_type"], i["is_required"]) for i in parameters["inputs"]] == [
        ("rows", "json", True), ("factor", "number", True), ("label", "string", False)]
    assert parameters["inputs"][2]["default_value"] == "rows"
    assert [(o["name"], o["data_type"]) for o in parameters["outputs"]] == [
        ("scaled", "json"), ("count", "number")]
    assert name in found["listed"]

    assert found["run"]["outputs"] == {"scaled": {"a": 2, "b": 5.0}, "count": 2}
    assert found["later"] == {"execution_id": found["started"]["execution_id"],
                              "outputs": {"scaled": {"c": 30}, "count": 1}}
    run_id = found["run"]["execution_id"]
    assert found["pipeline"]["creation_info"]["last_execution_id"] == \
        found["started"]["execution_id"]
    assert set(found["executions"]) == {run_id, found["started"]["execution_id"]}
    execution = found["execution"]
    assert execution["status"] == "Succeeded"
    inputs = {i["pipeline_input_name"]: i for i in execution["inputs"]}
    assert inputs["factor"]["source"] == "constant" and inputs["factor"]["value"] == 2
    assert inputs["label"]["value"] == "sample"
    assert found["output"]["value"] == {"a": 2, "b": 5.0}
    assert found["input"]["value"] == 2
    assert any(line["message"] == "sample: 2 rows" for line in found["logs"])
    assert found["build_logs"] and all({"timestamp", "message"} <= set(line)
                                       for line in found["build_logs"])
    assert found["build_logs_2"] == found["build_logs"][-2:]
    assert sorted((m["value"], m["execution_id"]) for m in found["metrics"]) == [
        (2, run_id), (10, found["started"]["execution_id"])]
    # one item per list, with its values, as 0.74 documents get_list_metrics
    assert [(m["name"], m["values"], m["execution_id"], m["pipeline_name"])
            for m in found["list_metrics"]] == [("scaled", [2, 5.0], run_id, name)]
    assert found["executions_after"] == [run_id]
    assert found["deleted"] == {"pipeline": {"name": name}, "deployments": []}
    assert found["gone"]["status_code"] == 404


def test_file_inputs_and_outputs(client, folder, unique) -> None:
    found = client('''
    import io
    from craft_ai_sdk.io import Input, Output

    name = "report-" + ARGS["unique"]
    sdk.create_pipeline(
        name, function_path="src/steps.py", function_name="report",
        container_config={"local_folder": ARGS["folder"], "included_folders": ["src"]},
        inputs=[Input("data_file", "file"), Input("title", "string")],
        outputs=[Output("summary", "file"), Output("lines", "number")])
    run = sdk.run_pipeline(name, inputs={"data_file": io.BytesIO(b"a\\nb\\nc\\n"),
                                         "title": "letters"})
    execution = sdk.get_pipeline_execution(run["execution_id"])
    emit({"outputs": {k: v.decode() if isinstance(v, bytes) else v
                      for k, v in run["outputs"].items()},
          "input_file": [i["value"].decode() for i in execution["inputs"]
                         if i["pipeline_input_name"] == "data_file"][0],
          "container_config": sdk.get_pipeline(name)["parameters"]["container_config"]})
    sdk.delete_pipeline(name)
    ''', unique=unique, folder=str(folder))
    assert found["outputs"] == {"summary": "letters: 3 lines", "lines": 3}
    assert found["input_file"] == "a\nb\nc\n"
    assert found["container_config"]["included_folders"] == ["src"]


def test_pipeline_from_git_without_waiting(client, unique, tmp_path) -> None:
    repo = tmp_path / "repo"
    commit = git_repo(repo, {"src/steps.py": CODE.replace(
        'sys.path.append(os.environ["CRAFT074_SITE"])', ""), "big.bin": "x" * 100})
    found = client('''
    name = "git-" + ARGS["unique"]
    started = sdk.create_pipeline(
        name, function_path="src/steps.py", function_name="report",
        container_config={"repository_url": ARGS["repo"], "repository_branch": "main",
                          "included_folders": ["src"]},
        wait_for_completion=False)
    ready = sdk.get_pipeline(name, wait_for_completion=True, timeout_s=600)
    emit({"started": started["creation_info"]["status"], "ready": ready})
    sdk.delete_pipeline(name)
    ''', unique=unique, repo=str(repo))
    assert found["started"] in ("creation_pending", "ready")
    info = found["ready"]["creation_info"]
    assert info["status"] == "ready" and info["origin"] == "git_repository"
    assert info["commit_id"] == commit
    assert found["ready"]["parameters"]["container_config"]["repository_branch"] == "main"


def test_a_failed_build_without_waiting_then_waiting(client, folder, unique, tmp_path) -> None:
    """The client ignores the creation's answer and waits with get_pipeline when asked
    to: wait_for_completion=False returns at once, and a failed build raises the
    documented CreationFailed when waited for."""
    bad = tmp_path / "bad"
    (bad / "src").mkdir(parents=True)
    (bad / "src" / "steps.py").write_text((folder / "src" / "steps.py").read_text())
    # fails in pip without reaching a package index
    (bad / "requirements.txt").write_text("nothing-here @ file:///nonexistent/nothing.whl\n")
    found = client('''
    name = "badbuild-" + ARGS["unique"]
    started = sdk.create_pipeline(
        name, function_path="src/steps.py", function_name="report",
        container_config={"local_folder": ARGS["folder"],
                          "requirements_path": "requirements.txt"},
        wait_for_completion=False)
    waited = error_of(sdk.get_pipeline, name, wait_for_completion=True, timeout_s=600)
    logs = " ".join(str(line.get("message")) for line in sdk.get_pipeline_logs(name))
    emit({"started": started["creation_info"]["status"], "waited": waited, "logs": logs})
    sdk.delete_pipeline(name)
    ''', unique=unique, folder=str(bad))
    assert found["started"] == "creation_pending"
    assert found["waited"]["name"] == "CreationFailed"
    assert "get_pipeline_logs" in found["waited"]["message"]
    assert "pip install failed" in found["logs"]  # where the client points to


def test_a_failed_run_raises_with_the_reason(client, folder, unique) -> None:
    found = client('''
    from craft_ai_sdk.io import Input

    name = "fails-" + ARGS["unique"]
    sdk.create_pipeline(name, function_path="src/steps.py", function_name="report",
                        container_config={"local_folder": ARGS["folder"]},
                        inputs=[Input("data_file", "file"), Input("title", "string")])
    emit({"missing": error_of(sdk.run_pipeline, name, inputs={"title": "no file"}),
          "no_pipeline": error_of(sdk.run_pipeline, "nope-" + ARGS["unique"])})
    sdk.delete_pipeline(name)
    ''', unique=unique, folder=str(folder))
    assert found["missing"]["status_code"] == 400 and "data_file" in found["missing"]["message"]
    assert found["no_pipeline"]["status_code"] == 404
