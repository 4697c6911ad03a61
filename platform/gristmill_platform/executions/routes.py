"""Run and execution routes (contract §3.6-3.12)."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from gristmill_platform.auth import policy
from gristmill_platform.deps import AppStateDep, PrincipalDep, SessionDep, transaction
from gristmill_platform.errors import BadRequest
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.repository import ExecutionOutcome, ExecutionRepository
from gristmill_platform.executions.responses import ExecutionFailed, stream_object
from gristmill_platform.executions.schemas import (
    execution_list_item,
    execution_read,
    execution_summary,
    log_read,
)
from gristmill_platform.executions.service import (
    ExecutionService,
    RunRequest,
    parse_mapping_field,
    read_outcome,
)
from gristmill_platform.http.bodies import json_or_form
from gristmill_platform.http.whole_forms import whole_form
from gristmill_platform.state import AppState
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.strict_json import parse_json

router = APIRouter(tags=["executions"])


async def service_dep(state: AppStateDep, session: SessionDep) -> ExecutionService:
    return state.factories.executions(session)


ServiceDep = Annotated[ExecutionService, Depends(service_dep)]


async def _run_request(request: Request) -> RunRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, tuple[str, Any]] = {}
    if content_type == "multipart/form-data":
        form = await whole_form(request, max_files=100, max_fields=100)
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            else:
                files[key] = (os.path.basename(value.filename or key), value.file)
    else:
        fields = await json_or_form(request)
    raw_inputs = fields.get("json_inputs", fields.get("inputs", {}))
    if isinstance(raw_inputs, str):
        raw_inputs = parse_json(raw_inputs, "json_inputs") if raw_inputs.strip() else {}
    if not isinstance(raw_inputs, dict):
        raise BadRequest("json_inputs must be a JSON object of input values")
    return RunRequest(
        inputs=raw_inputs, files=files,
        inputs_mapping=parse_mapping_field(fields.get("inputs_mapping"), "inputs_mapping"),
        outputs_mapping=parse_mapping_field(fields.get("outputs_mapping"), "outputs_mapping"),
    )


@router.post("/pipelines/{pipeline_name}/run", status_code=201)
async def run_pipeline(pipeline_name: str, request: Request, state: AppStateDep,
                       principal: PrincipalDep) -> dict[str, str]:
    policy.require_create(principal, "Running a pipeline")
    run = await _run_request(request)
    state.executions.check_room()  # 503 before anything is recorded when too many wait
    async with transaction(state) as session:
        pipeline, step = await state.factories.pipelines(session).get(pipeline_name)
        launch = await state.factories.executions(session).create(pipeline, step, run, principal)
    state.executions.launch(launch)
    return {"execution_id": launch.execution_id}


@router.get("/pipelines/{pipeline_name}/executions")
async def list_pipeline_executions(pipeline_name: str, state: AppStateDep, session: SessionDep,
                                   principal: PrincipalDep) -> list[dict[str, Any]]:
    await state.factories.pipelines(session).get(pipeline_name)
    executions = await ExecutionRepository(session).for_pipeline(pipeline_name)
    steps = await StepRepository(session).by_ids(e.step_id for e in executions)
    return [execution_list_item(e, steps.get(e.step_id or "")) for e in executions]


@router.get("/executions/{execution_id}")
async def get_execution(execution_id: str, principal: PrincipalDep, service: ServiceDep,
                        include_io_values: bool = True) -> dict[str, Any]:
    execution = await service.get(execution_id)
    graph, nodes = await service.graph_of(execution)
    return execution_read(execution, include_io_values=include_io_values, graph=graph,
                          nodes=nodes, step=await service.step_of(execution))


def _outputs_body(execution: Any) -> dict[str, Any]:
    return {"outputs": [
        {"pipeline_output_name": o["pipeline_output_name"], "data_type": o["data_type"],
         "mapping_type": o["mapping_type"],
         **({"value": o.get("value")} if o["data_type"] != "file" else {})}
        for o in execution.outputs]}


@router.get("/executions/{execution_id}/outputs", response_model=None)
async def execution_outputs(execution_id: str, request: Request, state: AppStateDep,
                            principal: PrincipalDep, wait_for_results: bool = False,
                            wait_for_completion: bool = False) -> Any:
    async def current() -> ExecutionOutcome:
        return await read_outcome(state.transactions, execution_id)

    execution: Any = None
    if wait_for_results or wait_for_completion:
        async def done() -> bool:
            nonlocal execution
            # woken by an ending this process committed: it came with the wake-up
            execution = state.executions.events.ended(execution_id) or await current()
            return execution.status not in t.ACTIVE

        # The wait reads the execution itself, first once its wake-up is registered (an
        # end committed after that read wakes it at once): no read of its own before, so
        # a long-poll that waits for the end reads the row twice, not three times.
        if not await state.executions.events.wait(execution_id, state.settings.long_poll_s,
                                                  done):
            # not finished: the client sends the same request again (contract §6.3)
            return JSONResponse(
                {"execution_id": execution_id, "status": t.DISPLAY[execution.status]},
                status_code=307, headers={"Location": str(request.url)})
    else:
        execution = await current()
    if execution.status == t.FAILED:
        raise ExecutionFailed(f"Execution {execution_id} failed: {execution.status_reason}",
                              additional_data={"execution_id": execution_id,
                                               "status": "Failed"})
    if execution.status == t.CANCELLED:
        raise ExecutionFailed(f"Execution {execution_id} was cancelled",
                              additional_data={"execution_id": execution_id,
                                               "status": "Cancelled"})
    return _outputs_body(execution)


async def _value_response(state: AppState, service: ExecutionService, execution_id: str,
                          kind: str, name: str) -> Response:
    execution = await service.get(execution_id)
    item = service.io_item(execution, kind, name)
    if item["data_type"] != "file" or item["mapping_type"] == "is_null":
        return JSONResponse(item.get("value"))
    if item.get("file"):
        path, filename = item["file"]["object"], item["file"]["filename"]
    elif item["mapping_type"] == "datastore":
        path = item["mapping_value"].get("resolved_path") or item["mapping_value"].get(
            "datastore_path")
        filename = str(path).rsplit("/", 1)[-1]
    else:
        return JSONResponse(None)  # not produced (the execution failed or is running)
    return await stream_object(service, path, filename)


@router.get("/executions/{execution_id}/inputs/{input_name}")
async def execution_input(execution_id: str, input_name: str, state: AppStateDep,
                          principal: PrincipalDep, service: ServiceDep) -> Response:
    return await _value_response(state, service, execution_id, "inputs", input_name)


@router.get("/executions/{execution_id}/outputs/{output_name}")
async def execution_output(execution_id: str, output_name: str, state: AppStateDep,
                           principal: PrincipalDep, service: ServiceDep) -> Response:
    return await _value_response(state, service, execution_id, "outputs", output_name)


@router.post("/executions/{execution_id}/logs")
async def execution_logs(execution_id: str, request: Request, principal: PrincipalDep,
                         service: ServiceDep) -> list[list[dict[str, Any]]]:
    lines = await service.logs(execution_id, await json_or_form(request))
    return [[log_read(line) for line in lines]]


@router.post("/executions/{execution_id}/cancel")
async def cancel_execution(execution_id: str, state: AppStateDep, principal: PrincipalDep
                           ) -> dict[str, Any]:
    async with transaction(state) as session:
        execution, cancelled, handles = await state.factories.executions(session).cancel(
            execution_id, principal)
        answer = execution_summary(execution)
    # after the commit: a worker stopped now finds its execution ended already
    state.executions.cancelled(cancelled)
    for handle in handles:
        await state.executions.stop_worker(handle)
    return answer


@router.delete("/executions/{execution_id}")
async def delete_execution(execution_id: str, state: AppStateDep, principal: PrincipalDep,
                           service: ServiceDep) -> dict[str, str]:
    execution = await service.get(execution_id)
    policy.require_owner(principal, execution.created_by, f"Execution {execution_id!r}")
    # a graph's running nodes are stopped with it
    _, nodes = await service.graph_of(execution)
    for item in [*nodes, execution]:
        if item.status in t.ACTIVE and item.handle:
            await state.executions.stop_worker(item.handle)
    for node in nodes:
        await service.delete(node)
    await service.delete(execution)
    return {"execution_id": execution_id}
