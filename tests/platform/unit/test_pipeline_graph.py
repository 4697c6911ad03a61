"""The graph of a multi-step pipeline: every rejection names its problem (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill_platform.errors import BadRequest
from gristmill_platform.pipelines.graph import StepShape, build_graph, progress

STEPS = {
    "load": StepShape("s1", "load", "ready", [{"name": "url", "data_type": "string"}],
                      [{"name": "rows", "data_type": "array"},
                       {"name": "raw", "data_type": "file"}]),
    "count": StepShape("s2", "count", "ready",
                       [{"name": "rows", "data_type": "array"},
                        {"name": "limit", "data_type": "number", "is_required": False}],
                       [{"name": "n", "data_type": "number"}]),
    "size": StepShape("s3", "size", "ready", [{"name": "doc", "data_type": "file"}],
                      [{"name": "bytes", "data_type": "number"}]),
    "sum": StepShape("s4", "sum", "ready", [{"name": "a", "data_type": "number"},
                                            {"name": "b", "data_type": "number"}],
                     [{"name": "total", "data_type": "number"}]),
    "building": StepShape("s5", "building", "creation_pending", [], []),
}


def diamond() -> list[dict[str, Any]]:
    return [
        {"name": "load", "step_name": "load", "inputs": {"url": {"pipeline_input": "url"}}},
        {"name": "count", "step_name": "count",
         "inputs": {"rows": {"node": "load", "output": "rows"}, "limit": {"constant": 3}}},
        {"name": "size", "step_name": "size", "inputs": {"doc": {"node": "load",
                                                                 "output": "raw"}}},
        {"name": "sum", "step_name": "sum", "inputs": {"a": {"node": "count", "output": "n"},
                                                       "b": {"node": "size",
                                                             "output": "bytes"}}},
    ]


OUTPUTS = [{"name": "total", "node": "sum", "output": "total"}]


def test_a_diamond_is_ordered_and_declares_its_inputs_and_outputs() -> None:
    nodes = list(reversed(diamond()))
    graph = build_graph(nodes, OUTPUTS, STEPS)
    order = [n["name"] for n in graph["nodes"]]
    assert order[0] == "load" and order[-1] == "sum"
    assert graph["inputs"] == [{"name": "url", "data_type": "string", "is_required": True,
                                "default_value": None, "description": None}]
    assert graph["outputs"][0]["data_type"] == "number"
    assert graph["nodes"][0]["step_id"] == "s1"


def _with(index: int, **changes: Any) -> list[dict[str, Any]]:
    nodes = diamond()
    nodes[index] = {**nodes[index], **changes}
    return nodes


@pytest.mark.parametrize(
    ("nodes", "outputs", "fragment"),
    [
        ([], OUTPUTS, "non-empty list"),
        (_with(1, step_name="nope"), OUTPUTS, "runs step 'nope', which does not exist"),
        (_with(1, step_name="building"), OUTPUTS, "not ready"),
        (_with(2, name="count"), OUTPUTS, "Two nodes are named 'count'"),
        (_with(0, inputs={"url": {"node": "sum", "output": "total"}}), OUTPUTS,
         "Type mismatch: output 'total' of node 'sum' is number"),
        (_with(0, inputs={"url": {"constant": 5}}), OUTPUTS, "must be of type string"),
        (_with(1, inputs={"rows": {"node": "count", "output": "n"}}), OUTPUTS,
         "Type mismatch"),
        (_with(3, inputs={"a": {"node": "count", "output": "n"}}), OUTPUTS,
         "Input 'b' of node 'sum' is required and not connected"),
        (_with(3, inputs={"a": {"node": "ghost", "output": "n"},
                          "b": {"constant": 1}}), OUTPUTS, "reads node 'ghost'"),
        (_with(3, inputs={"a": {"node": "count", "output": "nope"},
                          "b": {"constant": 1}}), OUTPUTS, "has no such output"),
        (_with(3, inputs={"a": {"constant": 1}, "b": {"constant": 1}, "c": {"constant": 1}}),
         OUTPUTS, "has no input 'c'"),
        (_with(3, inputs={"a": {"constant": 1, "pipeline_input": "x"}, "b": {"constant": 1}}),
         OUTPUTS, "exactly one source"),
        (_with(2, inputs={"doc": {"constant": "x"}}), OUTPUTS, "cannot be a constant"),
        (_with(3, inputs={"a": {"pipeline_input": "url"}, "b": {"constant": 1}}), OUTPUTS,
         "Type mismatch: pipeline input 'url' is string"),
        (diamond(), [{"name": "t", "node": "sum", "output": "total"},
                     {"name": "t", "node": "count", "output": "n"}], "Two pipeline outputs"),
        (diamond(), [{"name": "t", "node": "zzz", "output": "total"}], "reads node 'zzz'"),
    ],
)
def test_rejections_name_the_problem(nodes, outputs, fragment) -> None:
    with pytest.raises(BadRequest) as caught:
        build_graph(nodes, outputs, STEPS)
    assert fragment in caught.value.message


def test_a_cycle_is_named() -> None:
    nodes = [
        {"name": "a", "step_name": "sum", "inputs": {"a": {"node": "b", "output": "total"},
                                                     "b": {"constant": 1}}},
        {"name": "b", "step_name": "sum", "inputs": {"a": {"node": "a", "output": "total"},
                                                     "b": {"constant": 1}}},
        {"name": "c", "step_name": "sum", "inputs": {"a": {"constant": 1},
                                                     "b": {"constant": 1}}},
    ]
    with pytest.raises(BadRequest) as caught:
        build_graph(nodes, [], STEPS)
    assert caught.value.message.startswith("The nodes form a cycle: a, b")
    assert caught.value.additional_data == {"nodes": ["a", "b"]}


def test_progress_starts_what_is_ready_and_stops_at_the_first_failure() -> None:
    graph = build_graph(diamond(), OUTPUTS, STEPS)
    assert progress(graph, {}).ready == ["load"]
    assert progress(graph, {"load": "running"}).ready == []
    assert sorted(progress(graph, {"load": "succeeded"}).ready) == ["count", "size"]
    state = progress(graph, {"load": "succeeded", "count": "succeeded", "size": "running"})
    assert state.ready == [] and not state.done
    state = progress(graph, {"load": "succeeded", "count": "failed", "size": "running"})
    assert state.failed == "count" and state.ready == []
    done = progress(graph, dict.fromkeys(("load", "count", "size", "sum"), "succeeded"))
    assert done.done and done.ready == []


CHECKED = {**STEPS, "positive": StepShape("s6", "positive", "ready",
                                          [{"name": "n", "data_type": "number"}],
                                          [{"name": "ok", "data_type": "boolean"}])}


def test_checks_and_metric_bounds_are_checked() -> None:
    nodes = [*diamond(), {"name": "big", "step_name": "positive",
                          "inputs": {"n": {"node": "sum", "output": "total"}},
                          "check": {"severity": "warning"}}]
    graph = build_graph(nodes, OUTPUTS, CHECKED, {"accuracy": {"min": 0.8}})
    assert graph["nodes"][-1]["check"] == {"severity": "warning"}
    assert graph["metric_bounds"] == {"accuracy": {"min": 0.8, "max": None,
                                                   "severity": "error", "list": "every"}}
    assert build_graph(nodes, OUTPUTS, CHECKED, {"loss": {"max": 1, "list": "last"}})[
        "metric_bounds"]["loss"]["list"] == "last"
    nodes[-1]["check"] = {"severity": "fatal"}
    with pytest.raises(BadRequest, match="check is"):
        build_graph(nodes, OUTPUTS, CHECKED)
    nodes[-1] = {**nodes[-1], "step_name": "sum", "check": {"severity": "error"},
                 "inputs": {"a": {"constant": 1}, "b": {"constant": 2}}}
    with pytest.raises(BadRequest, match="must have exactly one output, of type boolean"):
        build_graph(nodes, OUTPUTS, CHECKED)
    for bounds, fragment in [({"acc": {}}, "needs min or max"),
                             ({"acc": {"min": "high"}}, "must be a number"),
                             ({"acc": {"min": 1, "severity": "meh"}}, "severity"),
                             ({"acc": {"min": 1, "step": 2}}, "unknown key"),
                             ({"acc": {"min": 1, "list": "first"}}, "list is")]:
        with pytest.raises(BadRequest, match=fragment):
            build_graph(diamond(), OUTPUTS, STEPS, bounds)


def test_bound_violations_say_why() -> None:
    from gristmill_platform.pipelines.graph import bound_violation

    bound = {"min": 0.8, "max": 1.0, "severity": "error"}
    assert bound_violation("acc", bound, 0.9) is None
    assert bound_violation("acc", bound, 0.5) == "metric 'acc' is 0.5, below its minimum 0.8"
    assert bound_violation("acc", bound, 2) == "metric 'acc' is 2, above its maximum 1"
    assert bound_violation("acc", bound, None) == "metric 'acc' was not recorded"


def test_bounds_on_list_metrics_judge_every_value_or_the_last() -> None:
    from gristmill_platform.pipelines.graph import bound_violation

    every = {"min": 0.0, "max": 1.0, "severity": "error", "list": "every"}
    last = {**every, "list": "last"}
    assert bound_violation("loss", every, None, [0.9, 0.5, 0.1]) is None
    assert bound_violation("loss", every, None, [0.9, 1.5, 0.1]) == (
        "list metric 'loss' has 1.5 at position 1, above its maximum 1")
    assert bound_violation("loss", every, None, [0.2, -3]) == (
        "list metric 'loss' has -3 at position 1, below its minimum 0")
    # last: only the value the list ends at
    assert bound_violation("loss", last, None, [1.5, 0.1]) is None
    assert bound_violation("loss", last, None, [0.1, 1.5]) == (
        "list metric 'loss' ends at 1.5, above its maximum 1")
    # a bound without "list" (stored before it existed) judges every value
    assert bound_violation("loss", {"max": 1.0}, None, [2, 0]) is not None
    # a name recorded both ways: both are judged
    assert bound_violation("loss", every, 0.5, [2]) is not None
    assert bound_violation("loss", every, 2, [0.5]) == "metric 'loss' is 2, above its maximum 1"
    assert bound_violation("loss", every, None, []) == "metric 'loss' was not recorded"
