"""The OpenAPI document: what FastAPI derives from the routes, completed with the bodies
routes parse themselves (JSON or forms, as craft-ai-sdk 0.50.1 sends them) and the
error body every 4xx/5xx answer has.

The descriptions live in one table, by method and path, so documenting the API never
changes what a route does on the wire; `tests/contract` checks the document against the
running service (schemathesis) and that every body-taking route is described.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter

from gristmill_platform.http import wire_models as w

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
BINARY = "binary"  # a response that is a file's bytes

ERROR_CODES = {
    "400": "Bad input: the message says what is wrong and how to fix it",
    "401": "No or invalid credentials",
    "403": "Not allowed",
    "404": "Not found",
    "409": "Conflicts with what exists",
    "413": "Too large",
    "422": "Malformed request (a parameter of the wrong type)",
    "500": "Internal error (or a failed execution, with its reason)",
}
# what this environment answers for hosted-platform features it does not have
NOT_SUPPORTED = {"description": "Not supported by Gristmill (NotSupported, with the reason)"}
NOT_SUPPORTED_OPERATIONS = {
    ("get", "/api/v1/pipeline-templates"), ("get", "/api/v1/pipeline-templates/{name}"),
    ("get", "/api/v1/environments/{environment_id}/vector-database"),
}


@dataclass(frozen=True)
class Doc:
    """How one operation's bodies look. ``request`` is accepted as JSON, and also as the
    form encodings in ``forms``; ``response`` is a model, a list of one (``many``), or
    ``BINARY`` bytes."""

    request: type[BaseModel] | None = None
    forms: tuple[str, ...] = ()
    response: type[BaseModel] | str | None = None
    many: bool = False
    summary: str | None = None
    csv: bool = False  # also answers text/csv (``format=csv``)


BOTH_FORMS = (FORM, MULTIPART)
API = "/api/v1"

OPERATIONS: dict[tuple[str, str], Doc] = {
    # steps
    ("post", f"{API}/steps"): Doc(w.StepCreate, (MULTIPART, FORM), w.Step),
    ("get", f"{API}/steps"): Doc(response=w.StepListItem, many=True),
    ("get", f"{API}/steps/{{step_name}}"): Doc(response=w.Step),
    ("delete", f"{API}/steps/{{step_name}}"): Doc(response=w.Deleted),
    ("get", f"{API}/steps/{{step_name}}/logs"): Doc(response=w.StepLogs),
    ("get", f"{API}/steps/{{step_name}}/download"): Doc(response=w.SignedUrlAnswer),
    # pipelines
    ("post", f"{API}/pipelines"): Doc(w.PipelineCreate, (MULTIPART, FORM), w.Pipeline),
    ("get", f"{API}/pipelines"): Doc(response=w.PipelineListItem, many=True),
    ("get", f"{API}/pipelines/{{pipeline_name}}"): Doc(response=w.Pipeline),
    ("delete", f"{API}/pipelines/{{pipeline_name}}"): Doc(response=w.Deleted),
    ("get", f"{API}/pipelines/{{pipeline_name}}/download"): Doc(response=w.SignedUrlAnswer),
    ("post", f"{API}/pipelines/{{pipeline_name}}/logs"):
        Doc(w.LogsQuery, BOTH_FORMS, w.LogLine, many=True),
    ("get", f"{API}/pipelines/{{pipeline_name}}/executions/latest"):
        Doc(response=w.ExecutionSummary),
    # runs and executions
    ("post", f"{API}/pipelines/{{pipeline_name}}/run"):
        Doc(w.RunRequest, BOTH_FORMS, w.ExecutionStarted),
    ("get", f"{API}/pipelines/{{pipeline_name}}/executions"):
        Doc(response=w.ExecutionSummary, many=True),
    ("get", f"{API}/executions/{{execution_id}}"): Doc(response=w.Execution),
    ("delete", f"{API}/executions/{{execution_id}}"): Doc(response=w.Deleted),
    ("post", f"{API}/executions/{{execution_id}}/cancel"):
        Doc(response=w.ExecutionSummary, summary="Cancel an execution (every running node)"),
    ("get", f"{API}/executions/{{execution_id}}/outputs"): Doc(response=w.ExecutionOutputs),
    ("get", f"{API}/executions/{{execution_id}}/inputs/{{input_name}}"): Doc(response=BINARY),
    ("get", f"{API}/executions/{{execution_id}}/outputs/{{output_name}}"):
        Doc(response=BINARY),
    ("post", f"{API}/executions/{{execution_id}}/logs"):
        Doc(w.LogsQuery, response=w.LogLine, many=True),
    # metrics
    ("put", f"{API}/metrics/single-value/{{name}}"): Doc(w.MetricValueRecord,
                                                         response=w.MetricItem),
    ("post", f"{API}/metrics/list-values/{{name}}"): Doc(w.ListMetricValuesRecord,
                                                          response=w.ListMetricsAdded),
    ("get", f"{API}/metrics/single-value"): Doc(response=w.MetricPage),
    ("get", f"{API}/metrics/list-values"): Doc(response=w.MetricPage),
    ("get", f"{API}/resource-metrics"): Doc(response=w.ResourceMetricsAnswer, csv=True),
    # data store routes that parse their own bodies
    ("post", f"{API}/data-store/download"): Doc(w.ObjectPath, BOTH_FORMS),
    ("post", f"{API}/data-store/upload/multipart"): Doc(response=w.MultipartStarted),
    # deployments
    ("post", f"{API}/endpoints"): Doc(w.DeploymentCreate, BOTH_FORMS, w.Deployment),
    ("post", f"{API}/periodic-deployment"): Doc(w.DeploymentCreate, BOTH_FORMS,
                                                 w.Deployment),
    ("get", f"{API}/deployments"): Doc(response=w.DeploymentListItem, many=True),
    ("get", f"{API}/deployments/{{name}}"): Doc(response=w.Deployment),
    ("patch", f"{API}/deployments/{{name}}"): Doc(w.DeploymentUpdate, response=w.Deployment),
    ("delete", f"{API}/deployments/{{name}}"): Doc(response=w.Deleted),
    ("get", f"{API}/deployments/{{name}}/executions/latest"): Doc(response=w.ExecutionSummary),
    ("get", f"{API}/deployments/{{name}}/executions"):
        Doc(response=w.ExecutionSummary, many=True),
    ("post", f"{API}/deployments/{{name}}/logs"): Doc(w.LogsQuery, response=w.LogLine,
                                                       many=True),
    # safe rollout (docs/rollout.md)
    ("get", f"{API}/deployments/{{name}}/traffic"): Doc(response=w.Traffic),
    ("put", f"{API}/deployments/{{name}}/traffic"): Doc(w.TrafficRule, response=w.Traffic,
                                                        summary="Set a traffic rule"),
    ("put", f"{API}/deployments/{{name}}/validations"):
        Doc(response=w.Traffic, summary="Set validations ({name: expression})"),
    ("post", f"{API}/deployments/{{name}}/executions/export"):
        Doc(w.ExecutionExport, response=w.ExecutionExported,
            summary="Export executions to the data store"),
    ("post", f"{API}/endpoints/{{name}}/generate-new-token"):
        Doc(w.EndpointTokenChoice, BOTH_FORMS, w.EndpointToken),
    # calling endpoints (endpoint token)
    ("post", "/endpoints/{name}"): Doc(w.EndpointInputs, (MULTIPART,), w.ExecutionStarted,
                                       summary="Trigger an endpoint"),
    # craft-ai-sdk 0.74
    ("post", f"{API}/deployments/{{name}}/executions"):
        Doc(w.EndpointInputs, (MULTIPART,), w.ExecutionStarted,
            summary="Trigger a deployment with the SDK token"),
    ("get", "/endpoints/v1/{name}/executions/{execution_id}"):
        Doc(response=w.EndpointResultV1, summary="An endpoint execution's results (0.74)"),
    ("get", "/endpoints/v1/{name}/executions/{execution_id}/outputs/{output_name}"):
        Doc(response=BINARY, summary="An endpoint execution's file output (0.74)"),
    ("get", f"{API}/project-information"): Doc(response=w.ProjectInformation),
    ("get", f"{API}/environment-info"): Doc(response=w.EnvironmentInfo),
    # health
    ("get", "/healthz"): Doc(response=w.Health, summary="Alive"),
    ("get", "/readyz"): Doc(response=w.Health, summary="Ready to serve (database reachable)"),
    ("get", "/"): Doc(response=w.ServiceInfo, summary="What this service is"),
    ("get", "/endpoints/{name}/executions/{execution_id}"):
        Doc(response=w.EndpointResult, summary="An endpoint execution's results"),
    ("post", "/endpoints/{name}/executions/{execution_id}"):
        Doc(response=w.EndpointResult, summary="An endpoint execution's results"),
}


class _Components:
    """Model schemas registered under #/components/schemas, nested models included."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def ref(self, model: type[BaseModel], many: bool = False) -> dict[str, Any]:
        schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, nested)
        self.schemas.setdefault(model.__name__, schema)
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        return {"type": "array", "items": ref} if many else ref


def _request_body(doc: Doc, components: _Components) -> dict[str, Any]:
    assert doc.request is not None
    ref = components.ref(doc.request)
    content = {JSON: {"schema": ref}}
    for media in doc.forms:
        # forms carry the same fields; nested ones as bracket keys or JSON text
        content[media] = {"schema": ref}
    return {"required": False, "content": content}


def _response(doc: Doc, components: _Components) -> dict[str, Any]:
    if doc.response == BINARY:
        return {"description": "The file's bytes",
                "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}
    assert doc.response is not None and not isinstance(doc.response, str)
    content: dict[str, Any] = {JSON: {"schema": components.ref(doc.response, doc.many)}}
    if doc.csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"description": "Success", "content": content}


def _unique_operation_ids(spec: dict[str, Any]) -> None:
    """One route serving several methods gets one id from FastAPI: suffix the method."""
    operations = [(method, op) for item in spec.get("paths", {}).values()
                  for method, op in item.items() if isinstance(op, dict)]
    counts = Counter(op.get("operationId") for _, op in operations)
    for method, op in operations:
        if counts[op.get("operationId")] > 1:
            base = op["operationId"].rsplit("_", 1)[0]
            op["operationId"] = f"{base}_{method}"


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with the table's bodies, the error body and unique ids."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    components = _Components(schemas)
    error = components.ref(w.ErrorBody)
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            doc = OPERATIONS.get((method, path))
            responses = op.setdefault("responses", {})
            if doc is not None:
                if doc.request is not None:
                    op["requestBody"] = _request_body(doc, components)
                if doc.response is not None:
                    # the route's own success code (FastAPI knows it from the decorator)
                    success = next((c for c in responses if c.startswith("2")), "200")
                    responses[success] = _response(doc, components)
                if doc.summary:
                    op["summary"] = doc.summary
            if (method, path) in NOT_SUPPORTED_OPERATIONS:
                responses.pop("200", None)
                responses["501"] = {**NOT_SUPPORTED, "content": {JSON: {"schema": error}}}
            api = path.startswith(API) or path.startswith("/endpoints")
            for code, description in ERROR_CODES.items():
                # validation errors (422) answer the error body too, not FastAPI's default
                if api or code in responses:
                    responses[code] = {"description": description,
                                       "content": {JSON: {"schema": error}}}
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    _unique_operation_ids(spec)
    return spec


def install(app: FastAPI) -> None:
    """Serve the described document at /openapi.json (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
