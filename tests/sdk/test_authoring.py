"""``from gristmill import step, pipeline``: plain Python outside a pipeline, a recorded
graph inside one, and a multi-step pipeline created, run and read through the SDK."""

from __future__ import annotations

import importlib.util
import textwrap
import time
from pathlib import Path

import pytest

from gristmill import pipeline, step
from gristmill.authoring import AuthoringError


@step
def tokenize(text: str) -> list:
    return text.split()


@step(outputs={"count": "number", "longest": "string"})
def stats(words: list, minimum: int = 0) -> dict:
    kept = [w for w in words if len(w) >= minimum]
    return {"count": len(kept), "longest": max(kept, key=len)}


@step
def describe(count: float, word: str, prefix: str = "") -> str:
    return f"{prefix}{count:g} words, longest {word}"


@pipeline
def flow(text: str) -> dict:
    words = tokenize(text)
    summary = stats(words, minimum=2)
    line = describe(count=summary["count"], word=summary["longest"], prefix="> ")
    return {"line": line, "count": summary["count"]}


def test_outside_a_pipeline_steps_are_plain_python() -> None:
    assert tokenize("a bc") == ["a", "bc"]
    assert stats(["a", "bcd"]) == {"count": 2, "longest": "bcd"}
    assert flow("ab cde") == {"line": "> 2 words, longest cde", "count": 2}
    # what the runner calls returns the dict of outputs
    assert tokenize.__gristmill_entry__(text="x y") == {"result": ["x", "y"]}
    assert stats.__gristmill_entry__(words=["ab"]) == {"count": 1, "longest": "ab"}


def test_a_pipeline_records_its_graph_without_running_anything() -> None:
    graph = flow.record()
    assert graph.nodes == [
        {"name": "tokenize", "step": "tokenize", "inputs": {"text": {"pipeline_input": "text"}}},
        {"name": "stats", "step": "stats",
         "inputs": {"words": {"node": "tokenize", "output": "result"},
                    "minimum": {"constant": 2}}},
        {"name": "describe", "step": "describe",
         "inputs": {"count": {"node": "stats", "output": "count"},
                    "word": {"node": "stats", "output": "longest"},
                    "prefix": {"constant": "> "}}},
    ]
    assert graph.outputs == [{"name": "line", "node": "describe", "output": "result"},
                             {"name": "count", "node": "stats", "output": "count"}]
    assert graph.steps["stats"].inputs == [
        {"name": "words", "data_type": "array"},
        {"name": "minimum", "data_type": "number", "is_required": False, "default_value": 0}]
    assert graph.steps["describe"].outputs == [{"name": "result", "data_type": "string"}]


def test_a_step_called_twice_gets_two_nodes() -> None:
    @pipeline
    def twice(text: str) -> dict:
        return {"a": tokenize(text), "b": tokenize("constant text")}

    assert [n["name"] for n in twice.record().nodes] == ["tokenize", "tokenize-2"]


def test_authoring_mistakes_are_named() -> None:
    @pipeline
    def whole_handle(text: str) -> dict:
        return {"x": stats(tokenize(text))}

    with pytest.raises(AuthoringError, match="several outputs: pick one"):
        whole_handle.record()

    @pipeline
    def unknown_output(text: str) -> dict:
        return {"x": stats(tokenize(text))["nope"]}

    with pytest.raises(AuthoringError, match="has no output 'nope'"):
        unknown_output.record()

    with pytest.raises(AuthoringError, match="cannot map the type"):
        @step
        def odd(x: set) -> int:  # type: ignore[type-arg]
            return len(x)

    @pipeline
    def nothing(text: str) -> dict:
        return {}

    with pytest.raises(AuthoringError, match="calls no step"):
        nothing.record()


FLOW_MODULE = '''
from gristmill import pipeline, step


@step
def tokenize(text: str) -> list:
    print(f"tokenizing {text!r}")
    return text.split()


@step(outputs={"count": "number", "longest": "string"})
def stats(words: list) -> dict:
    return {"count": len(words), "longest": max(words, key=len)}


@step
def describe(count: float, word: str) -> str:
    return f"{count:g} words, longest {word}"


@pipeline
def flow(text: str) -> dict:
    summary = stats(tokenize(text))
    return {"line": describe(count=summary["count"], word=summary["longest"]),
            "count": summary["count"]}
'''


def test_create_run_and_read_a_decorated_pipeline(gm, tmp_path: Path, unique) -> None:
    folder = tmp_path / "project"
    (folder / "flows").mkdir(parents=True)
    (folder / "flows" / "words.py").write_text(textwrap.dedent(FLOW_MODULE))
    spec = importlib.util.spec_from_file_location(f"words_{unique}",
                                                  folder / "flows" / "words.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    created = gm.create_pipeline(pipeline_name=f"words-{unique}", pipeline=module.flow,
                                 container_config={"local_folder": str(folder),
                                                   "requirements_path": ""})
    assert [n["name"] for n in created["graph"]["nodes"]] == ["tokenize", "stats", "describe"]
    assert gm.get_step(f"words-{unique}-stats")["parameters"]["function_path"] == \
        "flows/words.py"
    result = gm.run_pipeline(f"words-{unique}", inputs={"text": "a graph of steps"})
    assert result["outputs"] == {"line": "4 words, longest graph", "count": 4}
    execution = gm.get_pipeline_execution(result["execution_id"])
    assert [(s["name"], s["status"]) for s in execution["steps"]] == [
        ("tokenize", "Succeeded"), ("stats", "Succeeded"), ("describe", "Succeeded")]
    node_logs = gm.get_pipeline_execution_logs(
        execution_id=execution["steps"][0]["execution_id"])
    assert "tokenizing 'a graph of steps'" in [line["message"] for line in node_logs]


def test_a_decorated_pipeline_deployed_low_latency(gm, tmp_path: Path, unique) -> None:
    module = _load(tmp_path / "flows", "words", FLOW_MODULE, unique)
    name = f"llwords-{unique}"
    gm.create_pipeline(pipeline_name=name, pipeline=module.flow,
                       container_config={"requirements_path": ""})
    deployed = gm.create_deployment(pipeline_name=name, deployment_name=name,
                                    execution_rule="endpoint", mode="low_latency")
    assert deployed["status"] == "up"
    assert len(deployed["pods"]) == 3  # tokenize, stats, describe: one warm pool each
    answer = gm.trigger_endpoint(name, deployed["endpoint_token"],
                                 inputs={"text": "warm graph nodes"})
    assert answer["outputs"] == {"line": "3 words, longest graph", "count": 3}
    execution = gm.get_pipeline_execution(answer["execution_id"])
    assert [(s["name"], s["status"]) for s in execution["steps"]] == [
        ("tokenize", "Succeeded"), ("stats", "Succeeded"), ("describe", "Succeeded")]
    assert {s["worker"] for s in execution["steps"]} == {p["pod_id"] for p in deployed["pods"]}
    gm.delete_deployment(name)


NAP_MODULE = '''
import time

from gristmill import pipeline, step


@step
def nap(seconds: int) -> int:
    time.sleep(seconds)
    return seconds


@step
def double(n: int) -> int:
    return 2 * n


@pipeline
def napping(seconds: int) -> dict:
    return {"twice": double(nap(seconds))}
'''


def test_cancelling_a_low_latency_graph_execution(gm, tmp_path: Path, unique) -> None:
    from gristmill import ConflictError

    module = _load(tmp_path / "naps", "napping", NAP_MODULE, unique)
    name = f"llnap-{unique}"
    gm.create_pipeline(pipeline_name=name, pipeline=module.napping,
                       container_config={"requirements_path": ""})
    token = gm.create_deployment(pipeline_name=name, deployment_name=name,
                                 execution_rule="endpoint",
                                 mode="low_latency")["endpoint_token"]
    started = gm.trigger_endpoint(name, token, inputs={"seconds": 4},
                                  wait_for_results=False)
    execution_id = started["execution_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        steps = gm.get_pipeline_execution(execution_id)["steps"]
        if steps[0]["status"] == "Running":
            break
        time.sleep(0.1)
    assert steps[0]["status"] == "Running", steps

    cancelled = gm.cancel_pipeline_execution(execution_id)
    assert cancelled["status"] == "Cancelled"
    execution = gm.get_pipeline_execution(execution_id)
    assert [(s["name"], s["status"]) for s in execution["steps"]] == [
        ("nap", "Cancelled"), ("double", "Skipped")]
    with pytest.raises(ConflictError, match="has already ended"):
        gm.cancel_pipeline_execution(execution_id)
    # the nap's warm worker, which cannot stop a call midway, is replaced (the call stops
    # with it); the next call runs on the new one
    answer = gm.trigger_endpoint(name, token, inputs={"seconds": 0})
    assert answer["outputs"] == {"twice": 0}
    again = {s["name"]: s["worker"] for s in
             gm.get_pipeline_execution(answer["execution_id"])["steps"]}
    assert again["nap"] != steps[0]["worker"]
    assert gm.get_pipeline_execution(execution_id)["status"] == "Cancelled"
    stopped = f"execution {steps[0]['execution_id']} was stopped"
    deadline = time.monotonic() + 30  # the deployment logs are written every 0.5 s
    while time.monotonic() < deadline:
        logs = [line["message"] for line in gm.get_deployment_logs(name)]
        if any(stopped in message for message in logs):
            break
        time.sleep(0.2)
    assert any(stopped in message for message in logs), logs
    gm.delete_deployment(name)


CHECKED_MODULE = '''
from gristmill import Gristmill, check, pipeline, step


@step
def train(rows: int) -> float:
    Gristmill(progress=False).record_metric_value("accuracy", rows / 10)
    return rows / 10


@check(severity="warning")
def small(score: float) -> bool:
    return score < 0.5


@check(severity="error")
def positive(score: float) -> bool:
    return score > 0


@pipeline(metric_bounds={"accuracy": {"min": 0.3, "severity": "error"}})
def guarded(rows: int) -> dict:
    score = train(rows)
    small(score)
    positive(score)
    return {"score": score}
'''


def _load(folder: Path, name: str, code: str, unique: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(code))
    spec = importlib.util.spec_from_file_location(f"{name}_{unique}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checks_and_metric_bounds(gm, tmp_path: Path, unique) -> None:
    from gristmill import ExecutionFailedError

    module = _load(tmp_path / "checked", "guarded", CHECKED_MODULE, unique)
    assert module.small(0.7) is False  # plain Python outside a pipeline
    name = f"guarded-{unique}"
    created = gm.create_pipeline(pipeline_name=name, pipeline=module.guarded,
                                 container_config={"requirements_path": ""})
    assert created["graph"]["metric_bounds"]["accuracy"]["min"] == 0.3
    assert {n["name"]: n.get("check") for n in created["graph"]["nodes"]} == {
        "train": None, "small": {"severity": "warning"}, "positive": {"severity": "error"}}

    # a failed warning check is recorded, the execution succeeds
    passed = gm.run_pipeline(name, inputs={"rows": 6})
    assert passed["outputs"] == {"score": 0.6}
    read = gm.get_pipeline_execution(passed["execution_id"])
    assert read["status"] == "Succeeded"
    assert read["warnings"] == [{"kind": "check", "name": "small",
                                 "message": "check 'small' failed"}]
    by_name = {s["name"]: s for s in read["steps"]}
    assert by_name["small"]["check"] == {"severity": "warning", "passed": False}
    assert by_name["positive"]["check"] == {"severity": "error", "passed": True}

    # a failed error check fails it, naming the check
    with pytest.raises(ExecutionFailedError, match="check 'positive' failed"):
        gm.run_pipeline(name, inputs={"rows": 0})

    # a metric out of its error bound fails it, naming the metric
    with pytest.raises(ExecutionFailedError,
                       match="metric 'accuracy' is 0.2, below its minimum 0.3"):
        gm.run_pipeline(name, inputs={"rows": 2})


CURVES_MODULE = '''
from gristmill import Gristmill, pipeline, step


@step
def fit(losses: list) -> int:
    client = Gristmill(progress=False)
    client.record_list_metric_values("loss", losses[:2])
    client.record_list_metric_values("loss", losses[2:])  # appended, in order
    return len(losses)


@pipeline(metric_bounds={"loss": {"max": 1.0, "list": "last"},
                         "loss_every": {"max": 1.0, "severity": "warning"}})
def curves(losses: list) -> dict:
    return {"epochs": fit(losses)}
'''


def test_metric_bounds_on_list_metrics(gm, tmp_path: Path, unique) -> None:
    """A bound judges every value of a list metric (default) or its last (list: last)."""
    from gristmill import ExecutionFailedError

    module = _load(tmp_path / "curves", "curves", CURVES_MODULE, unique)
    name = f"curves-{unique}"
    created = gm.create_pipeline(pipeline_name=name, pipeline=module.curves,
                                 container_config={"requirements_path": ""})
    assert created["graph"]["metric_bounds"]["loss"] == {
        "min": None, "max": 1.0, "severity": "error", "list": "last"}
    # the curve starts above the maximum but ends below it: "last" passes; the warning
    # bound on a metric never recorded is a warning
    passed = gm.run_pipeline(name, inputs={"losses": [3.0, 1.5, 0.8, 0.4]})
    read = gm.get_pipeline_execution(passed["execution_id"])
    assert read["status"] == "Succeeded"
    assert read["warnings"] == [{"kind": "metric_bound", "name": "loss_every",
                                 "message": "metric 'loss_every' was not recorded"}]
    # ending above it fails, naming the last value
    with pytest.raises(ExecutionFailedError,
                       match="list metric 'loss' ends at 1.2, above its maximum 1"):
        gm.run_pipeline(name, inputs={"losses": [0.5, 0.4, 0.9, 1.2]})


def test_metric_bounds_judge_every_value_of_a_list_metric_by_default(gm, tmp_path: Path,
                                                                    unique) -> None:
    from gristmill import ExecutionFailedError

    code = CURVES_MODULE.replace('{"max": 1.0, "list": "last"}', '{"max": 1.0}')
    module = _load(tmp_path / "every", "curves", code, unique)
    name = f"every-{unique}"
    gm.create_pipeline(pipeline_name=name, pipeline=module.curves,
                       container_config={"requirements_path": ""})
    assert gm.run_pipeline(name, inputs={"losses": [0.9, 0.5, 0.3]})["outputs"] == {
        "epochs": 3}
    with pytest.raises(ExecutionFailedError,
                       match="list metric 'loss' has 1.5 at position 2, above its maximum 1"):
        gm.run_pipeline(name, inputs={"losses": [0.9, 0.5, 1.5, 0.3]})


def test_cache_and_check_are_recorded_on_their_nodes() -> None:
    from gristmill import check

    @step(cache=True)
    def heavy(text: str) -> int:
        return len(text)

    @check(severity="warning")
    def short(n: int) -> bool:
        return n < 10

    @pipeline(metric_bounds={"accuracy": {"min": 0.5}})
    def cached(text: str) -> dict:
        n = heavy(text)
        short(n)
        return {"n": n}

    graph = cached.record()
    assert graph.nodes[0]["cache"] is True and "check" not in graph.nodes[0]
    assert graph.nodes[1]["check"] == {"severity": "warning"} and "cache" not in graph.nodes[1]
    assert graph.steps["short"].outputs == [{"name": "result", "data_type": "boolean"}]
    assert graph.metric_bounds == {"accuracy": {"min": 0.5}}
    assert heavy("abc") == 3 and short(3) is True
    with pytest.raises(AuthoringError, match="severity"):
        check(severity="fatal")
