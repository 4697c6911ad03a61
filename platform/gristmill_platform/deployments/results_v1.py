"""An endpoint's results as craft-ai-sdk 0.74 reads them, outside /api/v1 and with the
endpoint token as ?token=: `GET /endpoints/v1/<path>/executions/<id>` answers
`{"execution_id", "outputs": {name: {"value": v} | {"url": file URL}}}` (307 to itself while
it runs), and the file URL serves a file output."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gristmill_platform.deployments.gateway import _wait_visible, outputs_answer, token_of
from gristmill_platform.deployments.routes import deployment_services
from gristmill_platform.deps import AppStateDep, transaction
from gristmill_platform.errors import NotFound
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.routes import stream_object
from gristmill_platform.executions.runtime import execution_service

router = APIRouter(prefix="/endpoints/v1", tags=["endpoints"])


def wrapped_outputs(execution: Any, files_url: str) -> dict[str, Any]:
    """Each endpoint output of a succeeded execution, wrapped so that the client can tell a
    value from a file to download (pure)."""
    answer = outputs_answer(execution)  # raises the documented error if it failed
    outputs: dict[str, Any] = {name: {"value": value}
                               for name, value in answer["outputs"].items()}
    for item in execution.outputs:
        if item["mapping_type"] == "endpoint" and item["data_type"] == "file":
            public = item["mapping_value"]["endpoint_output_name"]
            outputs[public] = {"url": f"{files_url}/{public}" if item.get("file") else None}
    return {"execution_id": execution.id, "outputs": outputs}


# `name` is the endpoint's URL path; gateway._wait_visible reads it under that name
@router.get("/{name}/executions/{execution_id}")
async def endpoint_results(name: str, execution_id: str, request: Request,
                           state: AppStateDep) -> Response:
    async with transaction(state) as session:
        deployment = await deployment_services(state, session).authorize_endpoint(
            name, token_of(request))
    execution = await _wait_visible(state, deployment.id, execution_id, request)
    if execution is None:
        return JSONResponse({"execution_id": execution_id, "status": "Running"},
                            status_code=307, headers={"Location": str(request.url)})
    files_url = (f"{state.settings.environment_url}/endpoints/v1/{name}/executions/"
                 f"{execution_id}/outputs")
    return JSONResponse(wrapped_outputs(execution, files_url))


@router.get("/{name}/executions/{execution_id}/outputs/{output_name}")
async def endpoint_file_output(name: str, execution_id: str, output_name: str,
                               request: Request, state: AppStateDep) -> Response:
    async with transaction(state) as session:
        deployment = await deployment_services(state, session).authorize_endpoint(
            name, token_of(request))
        service = execution_service(state, session)
        execution = await service.get(execution_id)
        if execution.deployment_id != deployment.id or execution.status != t.SUCCEEDED:
            raise NotFound(f"Execution {execution_id!r} of endpoint {name!r} has no result")
        item = next((o for o in execution.outputs if o["mapping_type"] == "endpoint"
                     and o["data_type"] == "file" and o.get("file")
                     and o["mapping_value"]["endpoint_output_name"] == output_name), None)
        if item is None:
            raise NotFound(f"Execution {execution_id!r} has no file output {output_name!r}")
        return await stream_object(service, item["file"]["object"], output_name)
