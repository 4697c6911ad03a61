"""The public endpoint gateway, outside /api/v1 (contract §4.6, 4.7, 4.9): callers hold an
endpoint token, not an SDK token."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Scope

from gristmill_platform.deployments.directory import Endpoint
from gristmill_platform.deployments.endpoint_inputs import inputs_of
from gristmill_platform.deployments.service import check_endpoint_token, check_triggerable
from gristmill_platform.deployments.traffic import route
from gristmill_platform.deps import AppStateDep, transaction
from gristmill_platform.errors import BadRequest, NotFound
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.records import ExecutionRecord
from gristmill_platform.executions.repository import ExecutionOutcome
from gristmill_platform.executions.responses import ExecutionFailed, stream_object
from gristmill_platform.executions.service import read_outcome
from gristmill_platform.state import AppState

router = APIRouter(prefix="/endpoints", tags=["endpoints"])
log = logging.getLogger("gristmill.gateway")
# shadow copies of database-path calls being recorded
_shadows: set[asyncio.Task[None]] = set()
# which pipeline answered (docs/rollout.md)
PIPELINE_HEADER = "X-Gristmill-Pipeline"
# Several times the journal's write interval: how long an unknown execution id is looked
# for before the answer is 404.
VISIBILITY_WAIT_S = 1.0


def query_token(scope: Scope) -> str | None:
    """?token=, percent-decoded but with '+' kept as it came: a chosen token may hold
    '+', and the 0.74 client puts it in the file-output URL unencoded. Form decoding
    would read a space, which no token holds; a client that encodes it sends %2B."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return None
    found = [unquote(value) for key, _, value in
             (pair.partition("=") for pair in raw.decode("latin-1").split("&"))
             if unquote(key) == "token"]
    return found[-1] if found else None  # the last one, as Starlette's query_params


def token_of(request: Request) -> str | None:
    return endpoint_token(request.headers.get("authorization", ""), query_token(request.scope))


def endpoint_token(authorization: str, query_token: str | None) -> str | None:
    """The caller's endpoint token: `Authorization: EndpointToken <token>`, or ?token=."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "endpointtoken" and value.strip():
        return value.strip()
    return query_token


def _is_sdk(request: Request) -> bool:
    return bool(request.headers.get("craft-ai-client") or request.headers.get("gristmill-client"))


def results_path(root_path: str, name: str, execution_id: str) -> str:
    return f"{root_path}/endpoints/{name}/executions/{execution_id}"


@router.post("/{name}")
async def trigger(name: str, request: Request, state: AppStateDep) -> Response:
    token = token_of(request)
    endpoint = await state.endpoints.lookup(name)
    deployment = check_endpoint_token(name, endpoint.deployment if endpoint else None, token)
    body, files = await inputs_of(request)
    if endpoint is not None and endpoint.fast and not files:
        return await trigger_fast(state, request, endpoint, body)
    if endpoint is None or endpoint.deployment.mode != "low_latency":
        state.executions.check_room()  # 503 before anything is recorded when too many wait
    assert endpoint is not None  # check_endpoint_token let no missing one through
    answering, shadows = choose(state, endpoint, body)
    await warm_variant(state, answering)
    # the database path (files, elastic): one transaction checks again and creates it
    async with transaction(state) as session:
        service = state.factories.deployments(session)
        deployment = await service.authorize_endpoint(name, token)
        launch = await service.trigger(deployment, body, files,
                                       pipeline_name=answering.pipeline_name)
    state.executions.launch(launch)
    if shadows and not files:  # a file is read once: a call with files has no copies
        start_shadows(state, deployment.name, shadows, body)
    execution_id = launch.execution_id
    headers = {"Craft-Ai-Execution-Id": execution_id,
               PIPELINE_HEADER: answering.pipeline_name}
    if not _is_sdk(request):
        # a plain HTTP caller (curl, fetch) gets the outputs in the answer when they come
        # in time; otherwise the 303 below sends it to the results URL
        finished = await _wait(state, deployment.id, execution_id, request)
        if finished is not None:
            response = await _result(state, name, finished)
            response.headers.update(headers)
            return response
    return _see_results(request, name, execution_id, headers)


async def warm_variant(state: AppState, endpoint: Endpoint) -> None:
    """A low-latency variant's warm workers up, and following their pipeline
    (LowLatencyDispatcher.warm); the deployment's own are brought up with it, and follow
    it when another control service updated it (LowLatencyDispatcher.follow)."""
    step = endpoint.step
    if (endpoint.deployment.mode != "low_latency" or step is None
            or step.status != "ready"):
        return
    dispatcher, wait_s = state.executions.low_latency, state.settings.step_build_wait_s
    deployment = endpoint.deployment
    if endpoint.worker_key != deployment.name:
        await dispatcher.warm(endpoint, wait_s=wait_s)
    else:
        await dispatcher.follow(deployment.name, deployment.id, deployment.generation,
                                wait_s=wait_s)


def start_shadows(state: AppState, name: str, shadows: list[Endpoint], body: dict[str, Any]
                  ) -> None:
    """Record and launch the shadow copies of a call after it: their failures (a pipeline
    not ready, a crash) are theirs alone."""
    task = asyncio.get_running_loop().create_task(_run_shadows(state, name, shadows, body))
    _shadows.add(task)
    task.add_done_callback(_shadows.discard)


async def _run_shadows(state: AppState, name: str, shadows: list[Endpoint],
                       body: dict[str, Any]) -> None:
    for shadow in shadows:
        pipeline = shadow.pipeline_name
        try:
            await warm_variant(state, shadow)
            async with transaction(state) as session:
                service = state.factories.deployments(session)
                launch = await service.trigger(await service.get(name), body, {},
                                               pipeline_name=pipeline, shadow=True)
            state.executions.launch(launch)
        except Exception:
            log.exception("the shadow copy for %s of a call to %s was not run", pipeline, name)


async def trigger_fast(state: AppState, request: Request, endpoint: Endpoint,
                       body: dict[str, Any]) -> Response:
    """A warm worker's execution with no file: tracked in memory (executions/low_latency.py),
    no query on the way."""
    ended, pipeline = await run_fast(state, endpoint, body, wait=not _is_sdk(request))
    name = endpoint.deployment.name
    if isinstance(ended, str):
        return _see_results(request, name, ended, {"Craft-Ai-Execution-Id": ended,
                                                   PIPELINE_HEADER: pipeline})
    return JSONResponse(outputs_answer(ended),
                        headers={"Craft-Ai-Execution-Id": ended.id, PIPELINE_HEADER: pipeline})


def choose(state: AppState, endpoint: Endpoint, body: dict[str, Any]
           ) -> tuple[Endpoint, list[Endpoint]]:
    """The endpoint as the pipeline its traffic rule picks answers it, and those getting a
    copy of the call (deployments/traffic.py)."""
    chosen = route(endpoint.rule, endpoint.deployment.pipeline_name, body,
                   state.endpoints.rng)
    answering = endpoint.variant(chosen.pipeline)
    if answering is None:
        raise BadRequest(f"Pipeline {chosen.pipeline!r} of the traffic rule is not there",
                         name="PipelineNotReady")
    return answering, [v for v in map(endpoint.variant, chosen.shadows) if v is not None]


async def run_fast(state: AppState, endpoint: Endpoint, body: dict[str, Any], *, wait: bool
                   ) -> tuple[ExecutionRecord | str, str]:
    """Run an execution of a fast endpoint (directory.Endpoint.fast), on the pipeline its
    traffic rule picks. With wait, the ended execution if it ends within the long-poll
    time; otherwise its id, for the 303; and the answering pipeline's name."""
    check_triggerable(endpoint.deployment)
    endpoint, shadows = choose(state, endpoint, body)
    step = endpoint.step
    if step is None or step.status != "ready":
        raise BadRequest(f"Pipeline {endpoint.pipeline_name!r} is not ready",
                         name="PipelineNotReady")
    dispatcher = state.executions.low_latency
    environment = await dispatcher.environment.current()
    await warm_variant(state, endpoint)
    tracked = dispatcher.track(endpoint, body, environment)
    for shadow in shadows:
        # in the background: never delaying nor failing this call
        dispatcher.shadow(shadow, body, environment,
                          wait_s=state.settings.step_build_wait_s)
    if wait:
        # asyncio.wait: no task of its own, and the execution goes on if the time runs out
        await asyncio.wait((tracked.done,), timeout=state.settings.long_poll_s)
        if tracked.done.done():
            return tracked.done.result(), endpoint.pipeline_name
    return tracked.execution.id, endpoint.pipeline_name


def _see_results(request: Request, name: str, execution_id: str, headers: dict[str, str]
                 ) -> Response:
    location = results_path(request.scope.get("root_path", ""), name, execution_id)
    return JSONResponse({"execution_id": execution_id}, status_code=303,
                        headers={**headers, "Location": location})


async def _current(state: Any, deployment_id: str, execution_id: str, name: str
                   ) -> ExecutionOutcome:
    """What the result needs of the execution: woken by an ending this process committed,
    the one it came with; else read on a bare connection (no ORM session)."""
    execution = (state.executions.events.ended(execution_id)
                 or await read_outcome(state.transactions, execution_id))
    if execution.deployment_id != deployment_id:
        raise NotFound(f"Execution {execution_id!r} not found for endpoint {name!r}")
    return execution


async def _wait(state: Any, deployment_id: str, execution_id: str, request: Request) -> Any:
    """The ended execution, or None if it is still running after the long-poll time."""
    name = request.path_params["name"]
    execution: Any = None

    async def done() -> bool:
        nonlocal execution
        execution = await _current(state, deployment_id, execution_id, name)
        return execution.status not in t.ACTIVE

    ended = await state.executions.events.wait(execution_id, state.settings.long_poll_s, done)
    return execution if ended else None


async def _wait_visible(state: Any, deployment_id: str, execution_id: str, request: Request
                        ) -> Any:
    """_wait, for an execution another control service process may still hold in memory:
    its journal writes it within a fraction of a second (executions/journal.py)."""
    deadline = asyncio.get_running_loop().time() + VISIBILITY_WAIT_S
    while True:
        try:
            return await _wait(state, deployment_id, execution_id, request)
        except NotFound:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _result(state: Any, name: str, execution: Any) -> Response:
    execution_id = execution.id
    file_output = next((o for o in execution.outputs if o["mapping_type"] == "endpoint"
                        and o["data_type"] == "file"), None)
    if execution.status == t.SUCCEEDED and file_output is not None and file_output.get("file"):
        public = file_output["mapping_value"]["endpoint_output_name"]
        async with transaction(state) as session:
            response = await stream_object(state.factories.executions(session),
                                           file_output["file"]["object"], public)
        # exactly this shape: the client takes what follows "_<id>_" as the output name
        response.headers["Content-Disposition"] = (
            f"attachment; filename={name}_{execution_id}_{public}")
        return response
    return JSONResponse(outputs_answer(execution))


def outputs_answer(execution: Any) -> dict[str, Any]:
    """An ended execution's answer at its endpoint (file outputs aside), or the error."""
    if execution.status != t.SUCCEEDED:
        raise ExecutionFailed(
            f"The execution failed: {execution.status_reason or execution.status}",
            additional_data={"execution_id": execution.id,
                             "status": t.DISPLAY[execution.status]},
            # as every other answer of the gateway (docs/deployments.md)
            headers={"Craft-Ai-Execution-Id": execution.id})
    return {"execution_id": execution.id, "outputs": {
        o["mapping_value"]["endpoint_output_name"]: o.get("value")
        for o in execution.outputs
        if o["mapping_type"] == "endpoint" and o["data_type"] != "file"}}


# POST too: `curl -L -X POST` keeps POST when it follows the trigger's 303
# one operation per method, each with its own id (one route for both shared an id)
@router.get("/{name}/executions/{execution_id}", operation_id="endpoint_result_get")
@router.post("/{name}/executions/{execution_id}", operation_id="endpoint_result_post")
async def result(name: str, execution_id: str, request: Request, state: AppStateDep
                 ) -> Response:
    async with transaction(state) as session:
        deployment = await state.factories.deployments(session).authorize_endpoint(
            name, token_of(request))
    execution = await _wait_visible(state, deployment.id, execution_id, request)
    if execution is None:
        # the same URL, token included: requests follows up to 30 redirects
        return JSONResponse({"execution_id": execution_id, "status": "Running"},
                            status_code=307, headers={"Location": str(request.url),
                                                      "Craft-Ai-Execution-Id": execution_id})
    response = await _result(state, name, execution)
    response.headers["Craft-Ai-Execution-Id"] = execution.id  # as every gateway answer
    return response


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


# craft-ai-sdk 0.74 reads an endpoint's results here, with the endpoint token as ?token=:
# {"execution_id", "outputs": {name: {"value": v} | {"url": file URL}}}, 307 to itself while
# it runs. `name` is the endpoint's URL path (_wait_visible reads it under that name).
@router.get("/v1/{name}/executions/{execution_id}")
async def endpoint_results_v1(name: str, execution_id: str, request: Request,
                           state: AppStateDep) -> Response:
    async with transaction(state) as session:
        deployment = await state.factories.deployments(session).authorize_endpoint(
            name, token_of(request))
    execution = await _wait_visible(state, deployment.id, execution_id, request)
    if execution is None:
        return JSONResponse({"execution_id": execution_id, "status": "Running"},
                            status_code=307, headers={"Location": str(request.url)})
    files_url = (f"{state.settings.environment_url}/endpoints/v1/{name}/executions/"
                 f"{execution_id}/outputs")
    return JSONResponse(wrapped_outputs(execution, files_url))


@router.get("/v1/{name}/executions/{execution_id}/outputs/{output_name}")
async def endpoint_file_output(name: str, execution_id: str, output_name: str,
                               request: Request, state: AppStateDep) -> Response:
    async with transaction(state) as session:
        deployment = await state.factories.deployments(session).authorize_endpoint(
            name, token_of(request))
        service = state.factories.executions(session)
        execution = await service.get(execution_id)
        if execution.deployment_id != deployment.id or execution.status != t.SUCCEEDED:
            raise NotFound(f"Execution {execution_id!r} of endpoint {name!r} has no result")
        item = next((o for o in execution.outputs if o["mapping_type"] == "endpoint"
                     and o["data_type"] == "file" and o.get("file")
                     and o["mapping_value"]["endpoint_output_name"] == output_name), None)
        if item is None:
            raise NotFound(f"Execution {execution_id!r} has no file output {output_name!r}")
        return await stream_object(service, item["file"]["object"], output_name)
