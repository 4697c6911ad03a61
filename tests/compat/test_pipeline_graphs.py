"""craft-ai-sdk 0.50.1, unchanged, runs and deploys a multi-step pipeline (created through
the REST form, which that client does not know)."""

from __future__ import annotations

import pytest

CODE = '''
def double(x: float) -> dict:
    print(f"doubling {x}")
    return {"y": x * 2}


def add(a: float, b: float) -> dict:
    return {"total": a + b}
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph-compat")
    (root / "src").mkdir()
    (root / "src" / "nodes.py").write_text(CODE)
    return root


@pytest.fixture
def graph(gristmill_env, craft_sdk, folder, unique) -> str:
    from craft_ai_sdk.io import Input, Output

    config = {"local_folder": str(folder), "requirements_path": ""}
    craft_sdk.create_step(step_name=f"double-{unique}", function_path="src/nodes.py",
                          function_name="double", inputs=[Input(name="x", data_type="number")],
                          outputs=[Output(name="y", data_type="number")],
                          container_config=config)
    craft_sdk.create_step(step_name=f"add-{unique}", function_path="src/nodes.py",
                          function_name="add",
                          inputs=[Input(name="a", data_type="number"),
                                  Input(name="b", data_type="number")],
                          outputs=[Output(name="total", data_type="number")],
                          container_config=config)
    name = f"graph-{unique}"
    with gristmill_env.client() as api:
        created = api.post("/pipelines", json={
            "pipeline_name": name,
            "nodes": [
                {"name": "left", "step_name": f"double-{unique}",
                 "inputs": {"x": {"pipeline_input": "x"}}},
                {"name": "right", "step_name": f"double-{unique}",
                 "inputs": {"x": {"pipeline_input": "z"}}},
                {"name": "sum", "step_name": f"add-{unique}",
                 "inputs": {"a": {"node": "left", "output": "y"},
                            "b": {"node": "right", "output": "y"}}}],
            "outputs": [{"name": "total", "node": "sum", "output": "total"}]})
        assert created.status_code == 201, created.text
    return name


def test_run_a_graph_and_read_it_per_node(craft_sdk, graph) -> None:
    result = craft_sdk.run_pipeline(graph, inputs={"x": 2, "z": 5})
    assert result["outputs"] == {"total": 14}
    execution_id = result["execution_id"]
    execution = craft_sdk.get_pipeline_execution(execution_id)
    assert execution["status"] == "Succeeded"
    assert [s["name"] for s in execution["steps"]] == ["left", "right", "sum"]
    logs = craft_sdk.get_pipeline_execution_logs(execution_id=execution_id)
    messages = [line["message"] for line in logs]
    assert "doubling 2" in messages and "doubling 5" in messages
    pipeline = craft_sdk.get_pipeline(graph)
    assert {i["input_name"] for i in pipeline["inputs"]} == {"x", "z"}


def test_deploy_a_graph_as_endpoint_and_periodic(craft_sdk, graph, unique) -> None:
    from craft_ai_sdk.io import InputSource, OutputDestination

    endpoint = craft_sdk.create_deployment(
        pipeline_name=graph, deployment_name=f"gep-{unique}", execution_rule="endpoint",
        inputs_mapping=[InputSource(pipeline_input_name="x", endpoint_input_name="first"),
                        InputSource(pipeline_input_name="z", constant_value=1)],
        outputs_mapping=[OutputDestination(pipeline_output_name="total",
                                           endpoint_output_name="sum")])
    result = craft_sdk.trigger_endpoint(f"gep-{unique}", endpoint["endpoint_token"],
                                        inputs={"first": 10})
    assert result["outputs"] == {"sum": 22}
    periodic = craft_sdk.create_deployment(
        pipeline_name=graph, deployment_name=f"gcron-{unique}", execution_rule="periodic",
        schedule="0 0 * * *",
        inputs_mapping=[InputSource(pipeline_input_name="x", constant_value=1),
                        InputSource(pipeline_input_name="z", constant_value=2)],
        outputs_mapping=[OutputDestination(pipeline_output_name="total", is_null=True)])
    assert periodic["execution_rule"] == "periodic"


def test_deploy_a_graph_low_latency(craft_sdk, graph, unique) -> None:
    from craft_ai_sdk.io import InputSource, OutputDestination

    endpoint = craft_sdk.create_deployment(
        pipeline_name=graph, deployment_name=f"gll-{unique}", execution_rule="endpoint",
        mode="low_latency",
        inputs_mapping=[InputSource(pipeline_input_name="x", endpoint_input_name="first"),
                        InputSource(pipeline_input_name="z", endpoint_input_name="second")],
        outputs_mapping=[OutputDestination(pipeline_output_name="total",
                                           endpoint_output_name="sum")])
    assert endpoint["status"] == "up"
    result = craft_sdk.trigger_endpoint(f"gll-{unique}", endpoint["endpoint_token"],
                                        inputs={"first": 10, "second": 1})
    assert result["outputs"] == {"sum": 22}
    execution = craft_sdk.get_pipeline_execution(result["execution_id"])
    # left and right run the same step: one warm worker serves both
    workers = {s["name"]: s["worker"] for s in execution["steps"]}
    assert workers["left"] == workers["right"] != workers["sum"]
    craft_sdk.delete_deployment(f"gll-{unique}")
