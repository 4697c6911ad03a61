"""How pipelines look on the wire (contract §3)."""

from __future__ import annotations

from typing import Any

from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.http.dates import iso
from gristmill_platform.pipelines.graph import node_named as graph_node
from gristmill_platform.steps.schemas import creation_info, public_container_config


def pipeline_inputs(step: Step) -> list[dict[str, Any]]:
    return [{"input_name": i["name"], "step_name": step.name, "data_type": i["data_type"],
             "description": i.get("description"), "default_value": i.get("default_value"),
             "is_required": i.get("is_required", True)} for i in step.inputs]


def pipeline_outputs(step: Step) -> list[dict[str, Any]]:
    return [{"output_name": o["name"], "step_name": step.name, "data_type": o["data_type"],
             "description": o.get("description")} for o in step.outputs]


def graph_read(graph: dict[str, Any]) -> dict[str, Any]:
    """A multi-step pipeline's graph as clients (and the console) draw it."""
    return {"nodes": [{"name": n["name"], "step_name": n["step_name"],
                       "inputs": n["inputs"], "cache": bool(n.get("cache")),
                       **({"check": n["check"]} if "check" in n else {})}
                      for n in graph["nodes"]],
            "outputs": [{"name": o["name"], "node": o["node"], "output": o["output"]}
                        for o in graph["outputs"]],
            "metric_bounds": graph.get("metric_bounds", {})}


def _graph_pipeline_read(pipeline: Pipeline, step: Step, graph: dict[str, Any]
                         ) -> dict[str, Any]:
    consumer = {}
    for node in reversed(graph["nodes"]):
        for source in node["inputs"].values():
            if "pipeline_input" in source:
                consumer[source["pipeline_input"]] = node
    producer = {o["name"]: graph_node(graph, o["node"]) for o in graph["outputs"]}
    inputs = [{"input_name": i["name"], "step_name": consumer[i["name"]]["step_name"],
               "node_name": consumer[i["name"]]["name"], "data_type": i["data_type"],
               "description": i.get("description"), "default_value": i.get("default_value"),
               "is_required": i.get("is_required", True)} for i in step.inputs]
    outputs = [{"output_name": o["name"], "step_name": producer[o["name"]]["step_name"],
                "node_name": producer[o["name"]]["name"], "data_type": o["data_type"],
                "description": o.get("description")} for o in step.outputs]
    return {
        "parameters": pipeline_parameters(pipeline, step),
        "pipeline_name": pipeline.name,
        "created_at": iso(pipeline.created_at),
        "created_by": pipeline.created_by,
        "steps": sorted({n["step_name"] for n in graph["nodes"]}),
        "inputs": inputs,
        "outputs": outputs,
        "open_inputs": [{k: i[k] for k in ("input_name", "step_name", "data_type")}
                        for i in inputs],
        "open_outputs": [{k: o[k] for k in ("output_name", "step_name", "data_type")}
                         for o in outputs],
        "description": step.description,
        "graph": graph_read(graph),
        "creation_info": {"created_at": iso(pipeline.created_at)},
    }


def pipeline_parameters(pipeline: Pipeline, step: Step) -> dict[str, Any]:
    """What the pipeline was created from, where craft-ai-sdk 0.74 reads it (it runs
    `parameters.inputs`); 0.50.1 reads the same things at the top level."""
    return {
        "pipeline_name": pipeline.name,
        "function_path": step.function_path,
        "function_name": step.function_name,
        "description": step.description,
        "inputs": [{"name": i["name"], "data_type": i["data_type"],
                    "description": i.get("description"), "is_required": i.get("is_required", True),
                    "default_value": i.get("default_value")} for i in step.inputs],
        "outputs": [{"name": o["name"], "data_type": o["data_type"],
                     "description": o.get("description")} for o in step.outputs],
        "container_config": public_container_config(step),
    }


def pipeline_read(pipeline: Pipeline, step: Step) -> dict[str, Any]:
    if pipeline.graph is not None:
        return _graph_pipeline_read(pipeline, step, pipeline.graph)
    info = creation_info(step)
    return {
        "parameters": pipeline_parameters(pipeline, step),
        "pipeline_name": pipeline.name,
        "created_at": iso(pipeline.created_at),
        "created_by": pipeline.created_by,
        "steps": [] if pipeline.owns_step else [step.name],
        "inputs": pipeline_inputs(step),
        "outputs": pipeline_outputs(step),
        "open_inputs": pipeline_inputs(step),
        "open_outputs": [{"output_name": o["name"], "step_name": step.name,
                          "data_type": o["data_type"]} for o in step.outputs],
        "function_path": step.function_path,
        "function_name": step.function_name,
        "description": step.description,
        "container_config": public_container_config(step),
        "creation_info": {**info, "created_at": iso(pipeline.created_at),
                          "created_by": pipeline.created_by, "pipeline_template": None},
    }


def pipeline_list_item(pipeline: Pipeline, step: Step) -> dict[str, Any]:
    return {"pipeline_name": pipeline.name, "created_at": iso(pipeline.created_at),
            "status": step.status}
