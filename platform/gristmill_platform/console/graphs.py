"""A multi-step pipeline's graph as the console draws it: server-side layout (layers from
left to right, each node after the nodes it reads) into an SVG of edges whose nodes are HTML
cards (foreignObject), so there is no script and no style attribute (the CSP allows
neither). Pure: the pipeline's stored graph in, boxes and edge paths out; the execution
page adds each node's run, as the API's ``steps`` of a graph execution describe it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gristmill_platform.db.models.executions import Execution
from gristmill_platform.executions.schemas import node_steps
from gristmill_platform.pipelines.graph import upstream_of

NODE_WIDTH = 210
GAP_X = 64
GAP_Y = 18
PAD = 6
# edges that skip columns run above the nodes, each on its own lane (up to MAX_LANES)
LANE_TOP = 14
LANE_GAP = 8
MAX_LANES = 6
# a pipeline page's card: name, step, flags; an execution page's: status, times, logs link
PIPELINE_NODE_HEIGHT = 62
EXECUTION_NODE_HEIGHT = 86

# what the console shows for the API's node statuses (executions/schemas.node_steps)
STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped", "cached")


@dataclass
class Box:
    name: str
    step_name: str
    layer: int
    x: float = 0.0
    y: float = 0.0
    upstream: tuple[str, ...] = ()
    flags: list[str] = field(default_factory=list)
    # an execution's node
    status: str | None = None
    execution_id: str | None = None
    reason: str | None = None
    started: datetime | None = None
    ended: datetime | None = None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    label: str
    state: str  # the source's status on an execution page ("" on a pipeline page)


@dataclass(frozen=True)
class Drawing:
    boxes: list[Box]
    edges: list[Edge]
    width: float
    height: float
    node_width: int
    node_height: int


def layers(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each node's column: one after the furthest node it reads (nodes come in a
    topological order, as the graph is stored)."""
    column: dict[str, int] = {}
    for node in nodes:
        column[node["name"]] = max((column[u] + 1 for u in upstream_of(node) if u in column),
                                   default=0)
    return column


def _order(nodes: Sequence[Mapping[str, Any]], column: Mapping[str, int]
           ) -> list[list[str]]:
    """Nodes of each column, ordered by the mean row of the nodes they read (barycentre:
    fewer crossing edges); ties keep the graph's order."""
    count = max(column.values(), default=-1) + 1
    by_column: list[list[str]] = [[] for _ in range(count)]
    for node in nodes:
        by_column[column[node["name"]]].append(node["name"])
    upstream = {n["name"]: upstream_of(n) for n in nodes}
    row: dict[str, float] = {name: i for i, name in enumerate(by_column[0] if by_column else [])}
    for index in range(1, count):
        names = by_column[index]
        weights = {}
        for position, name in enumerate(names):
            rows = [row[u] for u in upstream[name] if u in row]
            weights[name] = (sum(rows) / len(rows) if rows else float(position), position)
        names.sort(key=weights.__getitem__)
        row.update({name: i for i, name in enumerate(names)})
    return by_column


def _edge_path(x1: float, y1: float, x2: float, y2: float, lane: float | None = None
               ) -> str:
    """A curve from a node's right side to the next column's left side; an edge that
    skips columns runs along a lane above the nodes instead of through the ones between."""
    if lane is None:
        middle = (x1 + x2) / 2
        return f"M{x1:g} {y1:g} C{middle:g} {y1:g} {middle:g} {y2:g} {x2:g} {y2:g}"
    bend = GAP_X / 2
    return (f"M{x1:g} {y1:g} C{x1 + bend:g} {y1:g} {x1 + bend:g} {lane:g} {x1 + GAP_X:g} "
            f"{lane:g} L{x2 - GAP_X:g} {lane:g} C{x2 - bend:g} {lane:g} {x2 - bend:g} {y2:g} "
            f"{x2:g} {y2:g}")


def _flags(node: Mapping[str, Any]) -> list[str]:
    flags = []
    if "check" in node:
        flags.append(f"check ({node['check']['severity']})")
    if node.get("cache"):
        flags.append("cache")
    return flags


def draw(graph: Mapping[str, Any], node_height: int = PIPELINE_NODE_HEIGHT,
         runs: Mapping[str, Box] | None = None) -> Drawing:
    """Boxes and edges of a stored graph; ``runs`` (by node name) replaces a node's box
    with the one carrying its run."""
    nodes = list(graph.get("nodes") or [])
    column = layers(nodes)
    by_column = _order(nodes, column)
    tallest = max((len(c) for c in by_column), default=0)
    long_edges = [(u, n["name"]) for n in nodes for u in sorted(upstream_of(n))
                  if column[n["name"]] - column[u] > 1]
    lanes = min(len(long_edges), MAX_LANES)
    top_space = LANE_TOP + lanes * LANE_GAP if lanes else 0
    height = top_space + tallest * node_height + max(tallest - 1, 0) * GAP_Y + 2 * PAD
    named = {n["name"]: n for n in nodes}
    boxes: dict[str, Box] = {}
    for index, names in enumerate(by_column):
        used = len(names) * node_height + (len(names) - 1) * GAP_Y
        top = top_space + PAD + (height - top_space - 2 * PAD - used) / 2
        for row, name in enumerate(names):
            node = named[name]
            box = (runs or {}).get(name) or Box(name, node["step_name"], index)
            box.layer = index
            box.upstream = tuple(sorted(upstream_of(node)))
            box.flags = _flags(node)
            box.x = PAD + index * (NODE_WIDTH + GAP_X)
            box.y = top + row * (node_height + GAP_Y)
            boxes[name] = box
    edges = []
    for node in nodes:
        target = boxes[node["name"]]
        wires: dict[str, list[str]] = {}
        for input_name, source in node["inputs"].items():
            if "node" in source:
                wires.setdefault(source["node"], []).append(f"{source['output']} → {input_name}")
        for source_name, labels in sorted(wires.items()):
            source = boxes[source_name]
            lane = None
            if (source_name, target.name) in long_edges:
                index = long_edges.index((source_name, target.name)) % MAX_LANES
                lane = PAD + LANE_TOP / 2 + index * LANE_GAP
            edges.append(Edge(
                source_name, target.name,
                _edge_path(source.x + NODE_WIDTH, source.y + node_height / 2,
                           target.x - 2, target.y + node_height / 2, lane),
                f"{source_name} → {target.name}: {', '.join(labels)}",
                source.status or ""))
    width = len(by_column) * NODE_WIDTH + max(len(by_column) - 1, 0) * GAP_X + 2 * PAD
    ordered = [boxes[n["name"]] for n in nodes]
    return Drawing(ordered, edges, width, height, NODE_WIDTH, node_height)


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def node_status(step: Mapping[str, Any]) -> str:
    """The console's word for a node of the API's ``steps``: a node not started is
    pending while the execution runs and skipped once it ended; a node whose outputs were
    copied from an earlier run is cached."""
    status = str(step["status"]).lower()
    if status == "waiting":
        return "pending"
    if status == "succeeded" and step.get("cached"):
        return "cached"
    return status


def execution_drawing(execution: Execution, graph: Mapping[str, Any],
                      nodes: Sequence[Execution]) -> Drawing:
    """The graph of an execution, each node with its run (the API's node steps)."""
    runs = {}
    for index, step in enumerate(node_steps(execution, graph, nodes)):
        box = Box(step["name"], step["step_name"], index, status=node_status(step),
                  execution_id=step["execution_id"], reason=step["status_reason"],
                  started=_moment(step["start_date"]), ended=_moment(step["end_date"]))
        if "check" in step and step["check"]["passed"] is not None:
            box.reason = box.reason or ("check passed" if step["check"]["passed"]
                                        else "check failed")
        runs[step["name"]] = box
    return draw(graph, EXECUTION_NODE_HEIGHT, runs)


def wiring(graph: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each node's inputs and where they come from, for the pipeline page's table."""
    rows = []
    for node in graph.get("nodes") or []:
        sources = []
        for input_name, source in node["inputs"].items():
            if "node" in source:
                origin = f"node {source['node']} · {source['output']}"
            elif "pipeline_input" in source:
                origin = f"pipeline input {source['pipeline_input']}"
            else:
                origin = f"constant {source['constant']!r}"
            sources.append((input_name, origin))
        rows.append({"name": node["name"], "step_name": node["step_name"],
                     "inputs": sources, "flags": _flags(node)})
    return rows
