"""A multi-step pipeline's graph: nodes running steps, wired to pipeline inputs, other
nodes' outputs or constants (pure: checked once, at creation, then stored as JSON on the
pipeline).

The stored form (``Pipeline.graph``)::

    {"nodes": [{"name": "clean", "step_name": "clean-step", "step_id": "...",
                "inputs": {"raw": {"pipeline_input": "raw"},
                           "limit": {"constant": 10},
                           "model": {"node": "train", "output": "model"}}}],
     "inputs": [{"name": "raw", "data_type": "string", "is_required": true,
                 "default_value": null}],
     "outputs": [{"name": "score", "node": "evaluate", "output": "score",
                  "data_type": "number"}]}

Nodes are kept in a topological order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gristmill_platform.errors import BadRequest
from gristmill_platform.steps.names import validate_io_name, validate_resource_name
from gristmill_platform.steps.spec import check_value

MAX_NODES = 200
# Step.origin of a multi-step pipeline's hidden step: it runs no code of its own
GRAPH_ORIGIN = "graph"
SOURCE_KINDS = ("pipeline_input", "node", "constant")
SEVERITIES = ("error", "warning")


class InvalidGraph(BadRequest):
    name = "InvalidPipelineGraph"


@dataclass(frozen=True)
class StepShape:
    """What the graph needs to know of a step."""

    id: str
    name: str
    status: str
    inputs: Sequence[Mapping[str, Any]]
    outputs: Sequence[Mapping[str, Any]]


def referenced_steps(raw_nodes: object) -> list[str]:
    """The step names a creation request names (to fetch them before building)."""
    if not isinstance(raw_nodes, list):
        return []
    return sorted({n["step_name"] for n in raw_nodes
                   if isinstance(n, dict) and isinstance(n.get("step_name"), str)})


def build_graph(raw_nodes: object, raw_outputs: object,
                steps: Mapping[str, StepShape], raw_bounds: object = None) -> dict[str, Any]:
    """Check a creation request's graph against the steps it runs; the stored form, or
    InvalidGraph naming the first problem."""
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InvalidGraph("nodes must be a non-empty list of {name, step_name, inputs}")
    if len(raw_nodes) > MAX_NODES:
        raise InvalidGraph(f"A pipeline has at most {MAX_NODES} nodes")
    nodes: dict[str, dict[str, Any]] = {}
    for raw in raw_nodes:
        node = _node(raw, steps)
        if node["name"] in nodes:
            raise InvalidGraph(f"Two nodes are named {node['name']!r}: node names must be "
                               "unique")
        nodes[node["name"]] = node
    pipeline_inputs: dict[str, dict[str, Any]] = {}
    for node in nodes.values():
        _wire(node, nodes, steps, pipeline_inputs)
    order = _topological(nodes)
    outputs = _outputs(raw_outputs, nodes, steps)
    graph: dict[str, Any] = {"nodes": [nodes[name] for name in order],
                             "inputs": list(pipeline_inputs.values()), "outputs": outputs}
    bounds = metric_bounds(raw_bounds)
    if bounds:
        graph["metric_bounds"] = bounds
    return graph


def _node(raw: object, steps: Mapping[str, StepShape]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidGraph("Each node must be an object {name, step_name, inputs}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidGraph("A node lacks its name")
    name = validate_resource_name(name, "node")
    step_name = raw.get("step_name")
    if not isinstance(step_name, str):
        raise InvalidGraph(f"Node {name!r} lacks step_name")
    step = steps.get(step_name)
    if step is None:
        raise InvalidGraph(f"Node {name!r} runs step {step_name!r}, which does not exist",
                           additional_data={"node": name, "step_name": step_name})
    if step.status != "ready":
        raise InvalidGraph(f"Node {name!r} runs step {step_name!r}, which is not ready "
                           f"(status {step.status}): wait for its creation to finish",
                           additional_data={"node": name, "step_name": step_name})
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise InvalidGraph(f"The inputs of node {name!r} must be an object: input name -> "
                           "source")
    node: dict[str, Any] = {"name": name, "step_name": step.name, "step_id": step.id,
                            "inputs": inputs}
    if raw.get("check") is not None:
        node["check"] = _check(name, raw["check"], step)
    if raw.get("cache") not in (None, False):
        if raw["cache"] is not True:
            raise InvalidGraph(f"Node {name!r}: cache is true or false")
        node["cache"] = True
    return node


def _check(node: str, raw: object, step: StepShape) -> dict[str, str]:
    """A check node: its step returns one boolean; False fails the execution (error) or
    is recorded on it (warning)."""
    severity = raw.get("severity", "error") if isinstance(raw, dict) else None
    if severity not in SEVERITIES:
        raise InvalidGraph(f"Node {node!r}: check is {{\"severity\": \"error\" | "
                           "\"warning\"}")
    if [o["data_type"] for o in step.outputs] != ["boolean"]:
        raise InvalidGraph(f"Node {node!r} is a check: its step {step.name!r} must have "
                           "exactly one output, of type boolean")
    return {"severity": str(severity)}


# Which values of a list metric a bound judges: every one, or the last recorded.
LIST_MODES = ("every", "last")


def metric_bounds(raw: object) -> dict[str, dict[str, Any]]:
    """{metric: {"min"?, "max"?, "severity", "list"}} checked against the metrics the
    execution's nodes record (docs/pipelines.md: a single-value metric's value; of a list
    metric, every value or the last one)."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict):
        raise InvalidGraph("metric_bounds must be an object: metric name -> {min, max, "
                           "severity}")
    bounds = {}
    for name, bound in raw.items():
        where = f"metric_bounds[{name!r}]"
        if not isinstance(bound, dict) or not ({"min", "max"} & set(bound)):
            raise InvalidGraph(f"{where} needs min or max")
        unknown = sorted(set(bound) - {"min", "max", "severity", "list"})
        if unknown:
            raise InvalidGraph(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("min", "max"):
            value = bound.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                raise InvalidGraph(f"{where}: {key} must be a number")
        severity = bound.get("severity", "error")
        if severity not in SEVERITIES:
            raise InvalidGraph(f"{where}: severity is \"error\" or \"warning\"")
        mode = bound.get("list", "every")
        if mode not in LIST_MODES:
            raise InvalidGraph(f"{where}: list is \"every\" (every value of a list metric, "
                               "the default) or \"last\" (its last value)")
        bounds[str(name)] = {"min": bound.get("min"), "max": bound.get("max"),
                             "severity": severity, "list": mode}
    return bounds


def bound_violation(name: str, bound: Mapping[str, Any], value: float | None,
                    values: Sequence[float] = ()) -> str | None:
    """Why a metric breaks its bound, or None. ``value``: the single-value metric of that
    name (the latest recorded), ``values``: the list metric of that name, in the order
    recorded; each is judged when recorded, and one of them must be."""
    if value is None and not values:
        return f"metric {name!r} was not recorded"
    if value is not None:
        problem = _outside(bound, value)
        if problem is not None:
            return f"metric {name!r} is {value:g}, {problem}"
    if not values:
        return None
    if bound.get("list", "every") == "last":
        problem = _outside(bound, values[-1])
        return (f"list metric {name!r} ends at {values[-1]:g}, {problem}"
                if problem is not None else None)
    for position, item in enumerate(values):
        problem = _outside(bound, item)
        if problem is not None:
            return (f"list metric {name!r} has {item:g} at position {position}, {problem}")
    return None


def _outside(bound: Mapping[str, Any], value: float) -> str | None:
    if bound.get("min") is not None and value < bound["min"]:
        return f"below its minimum {bound['min']:g}"
    if bound.get("max") is not None and value > bound["max"]:
        return f"above its maximum {bound['max']:g}"
    return None


def _node_output(nodes: Mapping[str, Mapping[str, Any]], steps: Mapping[str, StepShape],
                 node: str, output: str, reader: str) -> Mapping[str, Any]:
    """The declared output ``output`` of node ``node``, which ``reader`` reads."""
    upstream = nodes.get(node)
    if upstream is None:
        raise InvalidGraph(f"{reader} reads node {node!r}, which is not in the pipeline")
    produced = {o["name"]: o for o in steps[upstream["step_name"]].outputs}
    found = produced.get(output)
    if found is None:
        raise InvalidGraph(f"{reader} reads output {output!r} of node {node!r}, whose step "
                           "has no such output")
    return found


def _source(node: str, input_name: str, raw: object) -> dict[str, Any]:
    where = f"Input {input_name!r} of node {node!r}"
    if not isinstance(raw, dict):
        raise InvalidGraph(f"{where}: a source is an object with one of "
                           f"{', '.join(SOURCE_KINDS)}")
    kinds = [k for k in SOURCE_KINDS if k in raw]
    if len(kinds) != 1:
        raise InvalidGraph(f"{where} must have exactly one source among "
                           f"{', '.join(SOURCE_KINDS)} (got {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    if kind == "constant":
        return {"constant": raw["constant"]}
    if kind == "pipeline_input":
        if not isinstance(raw["pipeline_input"], str):
            raise InvalidGraph(f"{where}: pipeline_input must be a name")
        return {"pipeline_input": validate_io_name(raw["pipeline_input"], "pipeline input")}
    if not isinstance(raw["node"], str) or not isinstance(raw.get("output"), str):
        raise InvalidGraph(f"{where}: a node source is {{\"node\": ..., \"output\": ...}}")
    return {"node": raw["node"], "output": raw["output"]}


def _wire(node: dict[str, Any], nodes: Mapping[str, Mapping[str, Any]],
          steps: Mapping[str, StepShape], pipeline_inputs: dict[str, dict[str, Any]]) -> None:
    step = steps[node["step_name"]]
    declared = {i["name"]: i for i in step.inputs}
    unknown = sorted(set(node["inputs"]) - set(declared))
    if unknown:
        raise InvalidGraph(f"Node {node['name']!r}: step {step.name!r} has no input "
                           f"{', '.join(map(repr, unknown))} (it declares: "
                           f"{', '.join(declared) or 'no input'})")
    wired: dict[str, Any] = {}
    for input_name, spec in declared.items():
        data_type = spec["data_type"]
        where = f"Input {input_name!r} of node {node['name']!r}"
        if input_name not in node["inputs"]:
            if spec.get("is_required", True) and spec.get("default_value") is None:
                raise InvalidGraph(f"{where} is required and not connected: give it a "
                                   "pipeline_input, a node output or a constant")
            continue
        source = _source(node["name"], input_name, node["inputs"][input_name])
        if "constant" in source:
            if data_type == "file":
                raise InvalidGraph(f"{where} is a file: it cannot be a constant")
            try:
                check_value(source["constant"], data_type, where)
            except BadRequest as exc:
                raise InvalidGraph(exc.message) from None
        elif "node" in source:
            output = _node_output(nodes, steps, source["node"], source["output"], where)
            if not compatible(output["data_type"], data_type):
                raise InvalidGraph(
                    f"Type mismatch: output {source['output']!r} of node {source['node']!r} "
                    f"is {output['data_type']}, input {input_name!r} of node "
                    f"{node['name']!r} is {data_type}")
        else:
            _declare_input(pipeline_inputs, source["pipeline_input"], spec, where)
        wired[input_name] = source
    node["inputs"] = wired


def compatible(produced: str, consumed: str) -> bool:
    """Whether a value of type ``produced`` may feed an input of type ``consumed``."""
    if produced == consumed:
        return True
    return consumed == "json" and produced != "file"


def _declare_input(pipeline_inputs: dict[str, dict[str, Any]], name: str,
                   spec: Mapping[str, Any], where: str) -> None:
    known = pipeline_inputs.get(name)
    required = spec.get("is_required", True) and spec.get("default_value") is None
    if known is None:
        pipeline_inputs[name] = {"name": name, "data_type": spec["data_type"],
                                 "is_required": bool(required),
                                 "default_value": spec.get("default_value"),
                                 "description": spec.get("description")}
        return
    if known["data_type"] != spec["data_type"]:
        raise InvalidGraph(f"Type mismatch: pipeline input {name!r} is {known['data_type']} "
                           f"where it is used first, but {where} is {spec['data_type']}")
    known["is_required"] = bool(known["is_required"] or required)
    if known["default_value"] != spec.get("default_value"):
        known["default_value"] = None  # the nodes disagree: no default for the pipeline


def upstream_of(node: Mapping[str, Any]) -> set[str]:
    return {s["node"] for s in node["inputs"].values() if "node" in s}


def _topological(nodes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    remaining = {name: upstream_of(node) for name, node in nodes.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(name for name, needs in remaining.items() if not needs - set(order))
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise InvalidGraph(f"The nodes form a cycle: {cycle} (each waits for another)",
                               additional_data={"nodes": sorted(remaining)})
        for name in ready:
            order.append(name)
            del remaining[name]
    return order


def _outputs(raw: object, nodes: Mapping[str, Mapping[str, Any]],
             steps: Mapping[str, StepShape]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidGraph("outputs must be a list of {name, node, output}")
    outputs: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str)
                                                 for k in ("name", "node", "output")):
            raise InvalidGraph("Each pipeline output is {name, node, output}")
        name = validate_io_name(item["name"], "pipeline output")
        if any(o["name"] == name for o in outputs):
            raise InvalidGraph(f"Two pipeline outputs are named {name!r}")
        output = _node_output(nodes, steps, item["node"], item["output"],
                              f"Pipeline output {name!r}")
        outputs.append({"name": name, "node": item["node"], "output": output["name"],
                        "data_type": output["data_type"],
                        "description": output.get("description")})
    return outputs


# -- progress of a run (pure) -----------------------------------------------------------------

WAITING, SKIPPED = "waiting", "skipped"


@dataclass(frozen=True)
class Progress:
    ready: list[str]        # nodes to start now
    failed: str | None      # the first failed node, if any
    done: bool              # every node succeeded


def progress(graph: Mapping[str, Any], statuses: Mapping[str, str]) -> Progress:
    """What to do next, given the status of each started node (nodes not in ``statuses``
    have not started)."""
    failed = next((n["name"] for n in graph["nodes"]
                   if statuses.get(n["name"]) in ("failed", "cancelled")), None)
    if failed is not None:
        return Progress([], failed, False)
    succeeded = {name for name, status in statuses.items() if status == "succeeded"}
    ready = [n["name"] for n in graph["nodes"]
             if n["name"] not in statuses and upstream_of(n) <= succeeded]
    done = len(succeeded) == len(graph["nodes"])
    return Progress(ready, None, done)


def node_named(graph: Mapping[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in graph["nodes"] if n["name"] == name)
    return found
