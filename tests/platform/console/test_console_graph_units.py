"""Pure parts of the console's graph drawing (console/graphs.py) and traffic section
(console/rollout.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gristmill_platform.console.graphs import (
    GAP_X,
    NODE_WIDTH,
    PAD,
    draw,
    execution_drawing,
    layers,
    node_status,
    wiring,
)
from gristmill_platform.console.rollout import sdk_call, traffic_view
from gristmill_platform.db.models.executions import Execution


def node(name: str, **inputs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "step_name": f"{name}-step", "inputs": inputs}


def out(source: str, output: str = "o") -> dict[str, Any]:
    return {"node": source, "output": output}


# a diamond with a shortcut: a → b, a → c, (b, c) → d, a → d; and e alone
GRAPH = {"nodes": [node("a", x={"pipeline_input": "x"}),
                   node("e", y={"constant": 3}),
                   node("b", v=out("a")), node("c", v=out("a")),
                   node("d", l=out("b"), r=out("c"), s=out("a", "w"))],
         "outputs": []}


def test_each_node_sits_one_column_after_the_furthest_node_it_reads() -> None:
    assert layers(GRAPH["nodes"]) == {"a": 0, "e": 0, "b": 1, "c": 1, "d": 2}
    drawing = draw(GRAPH)
    boxes = {b.name: b for b in drawing.boxes}
    assert [b.name for b in drawing.boxes] == ["a", "e", "b", "c", "d"]  # the graph's order
    assert {n: b.x for n, b in boxes.items()} == {
        "a": PAD, "e": PAD, "b": PAD + NODE_WIDTH + GAP_X, "c": PAD + NODE_WIDTH + GAP_X,
        "d": PAD + 2 * (NODE_WIDTH + GAP_X)}
    assert boxes["a"].y < boxes["e"].y and boxes["b"].y < boxes["c"].y
    assert drawing.width == 3 * NODE_WIDTH + 2 * GAP_X + 2 * PAD
    # every box inside the drawing
    assert all(b.y >= 0 and b.y + drawing.node_height <= drawing.height for b in drawing.boxes)
    assert sorted((e.source, e.target) for e in drawing.edges) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]
    shortcut = next(e for e in drawing.edges if (e.source, e.target) == ("a", "d"))
    assert shortcut.label == "a → d: w → s"
    # the edge skipping a column runs on a lane above the nodes, not through b or c
    assert " L" in shortcut.path
    lane_y = float(shortcut.path.split(" L")[1].split()[1])
    assert lane_y < min(b.y for b in drawing.boxes)
    direct = next(e for e in drawing.edges if (e.source, e.target) == ("a", "b"))
    assert " L" not in direct.path and direct.path.startswith(
        f"M{PAD + NODE_WIDTH:g} ")


def test_nodes_are_ordered_by_the_rows_they_read_from() -> None:
    # c is listed first but reads the second source: it goes below b
    graph = {"nodes": [node("s1"), node("s2"), node("c", v=out("s2")), node("b", v=out("s1"))]}
    boxes = {b.name: b for b in draw(graph).boxes}
    assert boxes["b"].y < boxes["c"].y


def test_a_single_chain_has_no_lane_and_an_empty_graph_draws_nothing() -> None:
    chain = draw({"nodes": [node("a"), node("b", v=out("a"))]})
    assert chain.height == chain.node_height + 2 * PAD
    empty = draw({"nodes": []})
    assert (empty.boxes, empty.edges, empty.width) == ([], [], 2 * PAD)


def test_wiring_names_each_input_source_and_flags() -> None:
    graph = {"nodes": [node("a", x={"pipeline_input": "x"}, k={"constant": "z"}),
                       {**node("b", v=out("a")), "check": {"severity": "warning"},
                        "cache": True}]}
    assert wiring(graph) == [
        {"name": "a", "step_name": "a-step", "flags": [],
         "inputs": [("x", "pipeline input x"), ("k", "constant 'z'")]},
        {"name": "b", "step_name": "b-step", "flags": ["check (warning)", "cache"],
         "inputs": [("v", "node a · o")]}]


def test_node_statuses_in_the_console_words() -> None:
    assert node_status({"status": "Waiting"}) == "pending"
    assert node_status({"status": "Skipped"}) == "skipped"
    assert node_status({"status": "Succeeded", "cached": True}) == "cached"
    assert node_status({"status": "Succeeded", "cached": False}) == "succeeded"
    assert node_status({"status": "Failed"}) == "failed"
    assert node_status({"status": "Running"}) == "running"


def _run(name: str, status: str, started: datetime, backend: str = "local",
         ended: datetime | None = None) -> Execution:
    return Execution(id=f"x-{name}", node_name=name, status=status, started_at=started,
                     ended_at=ended, handle={"backend": backend}, outputs=[],
                     status_reason="boom" if status == "failed" else None, worker=None)


def test_an_execution_drawing_carries_each_node_run() -> None:
    start = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    graph = {"nodes": [node("a"), node("b", v=out("a")), node("c", v=out("b"))]}
    parent = Execution(id="x", status="running")
    runs = [_run("a", "succeeded", start, "cache", start + timedelta(seconds=2)),
            _run("b", "running", start + timedelta(seconds=3))]
    boxes = {b.name: b for b in execution_drawing(parent, graph, runs).boxes}
    assert {n: b.status for n, b in boxes.items()} == {"a": "cached", "b": "running",
                                                       "c": "pending"}
    assert boxes["a"].execution_id == "x-a" and boxes["c"].execution_id is None
    assert boxes["a"].ended == start + timedelta(seconds=2)
    edges = {(e.source, e.target): e.state for e in execution_drawing(parent, graph,
                                                                       runs).edges}
    assert edges == {("a", "b"): "cached", ("b", "c"): "running"}

    parent.status = "failed"
    runs[1] = _run("b", "failed", start, ended=start + timedelta(seconds=1))
    boxes = {b.name: b for b in execution_drawing(parent, graph, runs).boxes}
    assert (boxes["b"].status, boxes["b"].reason, boxes["c"].status) == (
        "failed", "boom", "skipped")


SUMMARY = {
    "rule": {"split": {"v1": 3, "v2": 1}},
    "validations": {"short": "len(text) <= 4"},
    "validation_counts": {"short": 2, "gone": 1},
    "comparison": [
        {"pipeline_name": "v1", "shadow": False, "calls": 3, "ended": 3, "failure_rate": 0.0,
         "latency_ms_p50": 12.5, "latency_ms_p95": 30.0,
         "validation_failures": {"short": 2, "gone": 1}},
        {"pipeline_name": "v2", "shadow": False, "calls": 1, "ended": 0, "failure_rate": None,
         "latency_ms_p50": None, "latency_ms_p95": None, "validation_failures": {}},
        {"pipeline_name": "v3", "shadow": True, "calls": 2, "ended": 2, "failure_rate": 0.5,
         "latency_ms_p50": 40.0, "latency_ms_p95": 41.25, "validation_failures": {}}],
    "comparison_window": 10_000}


def test_a_split_rule_with_shares_validations_and_comparison_rows() -> None:
    when = datetime(2026, 12, 5, tzinfo=UTC)
    view = traffic_view("scorer", "v1", True, SUMMARY,
                        [("u1", when, "traffic", {"split": {"v1": 3, "v2": 1}}),
                         ("u1", when, "validations", {}), ("u1", when, "traffic", {})])
    assert view["kind"] == "split"
    assert view["split"] == [{"pipeline": "v1", "weight": 3, "share": "75 %"},
                             {"pipeline": "v2", "weight": 1, "share": "25 %"}]
    assert view["call"] == 'sdk.set_deployment_traffic("scorer", split={"v1": 3, "v2": 1})'
    assert view["validations"] == [{"name": "short", "expression": "len(text) <= 4",
                                    "failures": 2}]
    assert view["former_validations"] == [("gone", 1)]
    assert [(c["pipeline"], c["role"], c["failure_rate"], c["p50"], c["p95"])
            for c in view["comparison"]] == [
        ("v1", "own pipeline", "0.0 %", "12.5 ms", "30 ms"),
        ("v2", "variant", "—", "—", "—"),
        ("v3", "shadow copy", "50.0 %", "40 ms", "41.25 ms")]
    assert view["comparison"][0]["validation_failures"] == [("gone", 1), ("short", 2)]
    assert [c["value"] for c in view["changes"]] == ['split={"v1": 3, "v2": 1}', "none",
                                                     "no rule"]


def test_key_shadow_and_no_rule() -> None:
    key = traffic_view("d", "own", True, {"rule": {"key": "country", "routes": {
        "fr": "p-fr", "de": "p-de"}, "default": "own"}})
    assert (key["kind"], key["key"], key["routes"], key["default"]) == (
        "key", "country", [("de", "p-de"), ("fr", "p-fr")], "own")
    assert key["call"].startswith('sdk.set_deployment_traffic("d", key="country", routes=')
    shadow = traffic_view("d", "own", True, {"rule": {"shadow": ["p2", "p3"]}})
    assert (shadow["kind"], shadow["shadow"]) == ("shadow", ["p2", "p3"])
    none = traffic_view("d", "own", False, {"rule": {}})
    assert none["kind"] is None and none["comparison"] == [] and none["validations"] == []
    assert none["call"] == sdk_call("d", {}) == 'sdk.set_deployment_traffic("d")'
    assert none["validations_call"] == ('sdk.set_deployment_validations("d", '
                                        '{"name": "expression"})')
