"""The API's bodies as pydantic models, for its OpenAPI description only.

Routes keep building plain dicts (the wire format is fixed by craft-ai-sdk 0.50.1 and
tested in tests/compat); these models describe those dicts. Every model accepts fields it
does not list (``extra="allow"``), so a field added on the wire never makes a response
contradict its schema, and a documented field stays optional where some answers omit it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JsonValue = Any  # any JSON value: inputs, outputs, defaults


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors ----------------------------------------------------------------------------------

class ErrorBody(Wire):
    """Every error: 4xx and 5xx answers have this body."""

    message: str = Field(examples=["Step 'my-step' not found"])
    name: str | None = Field(default=None, examples=["StepNotFound"])
    request_id: str | None = Field(default=None, examples=["2ff2163504d174af0000000000000006"])
    additional_data: JsonValue = None


# -- steps and pipelines ---------------------------------------------------------------------

class IODeclaration(Wire):
    name: str = Field(examples=["input_data"])
    data_type: str = Field(examples=["json"])
    description: str | None = None
    is_required: bool | None = None
    default_value: JsonValue = None


class ContainerConfig(Wire):
    language: str | None = Field(default=None, examples=["python:3.11-slim"])
    repository_url: str | None = None
    repository_branch: str | None = None
    requirements_path: str | None = Field(default=None, examples=["requirements.txt"])
    included_folders: list[str] | None = None
    system_dependencies: list[str] | None = None
    dockerfile_path: str | None = None
    local_folder: str | None = None


class StepCreate(Wire):
    """Creating a step: JSON, or a form (url-encoded or multipart with the code archive
    as ``step_file``), nested fields as bracket keys (``inputs[0][name]``)."""

    step_name: str = Field(examples=["my-step"])
    function_path: str = Field(examples=["src/my_step.py"])
    function_name: str = Field(examples=["predict"])
    description: str | None = None
    inputs: list[IODeclaration] | None = None
    outputs: list[IODeclaration] | None = None
    container_config: ContainerConfig | None = None


class StepParameters(Wire):
    step_name: str
    function_path: str | None = None
    function_name: str | None = None
    description: str | None = None
    inputs: list[IODeclaration] = []
    outputs: list[IODeclaration] = []
    container_config: ContainerConfig | None = None


class CreationInfo(Wire):
    created_at: str | None = None
    updated_at: str | None = None
    created_by: str | None = None
    updated_by: str | None = None
    commit_id: str | None = None
    status: str = Field(examples=["ready"], description=(
        "creation_pending, ready or creation_failed (lower case: craft-ai-sdk 0.50.1 "
        "waits for 'ready')"))
    origin: str | None = Field(default=None, examples=["local", "git_repository"])
    status_reason: str | None = None
    warnings: list[str] | None = None


class Step(Wire):
    parameters: StepParameters
    creation_info: CreationInfo


class StepListItem(Wire):
    step_name: str
    status: str
    created_at: str | None = None
    updated_at: str | None = None
    repository_branch: str | None = None
    repository_url: str | None = None
    commit_id: str | None = None
    origin: str | None = None


class StepLogs(Wire):
    logs: str


class PipelineCreate(Wire):
    """Creating a pipeline from a step (``step_name``), or from code like a step."""

    pipeline_name: str = Field(examples=["my-pipeline"])
    step_name: str | None = Field(default=None, examples=["my-step"])
    function_path: str | None = None
    function_name: str | None = None
    description: str | None = None
    inputs: list[IODeclaration] | None = None
    outputs: list[IODeclaration] | None = None
    container_config: ContainerConfig | None = None


class OpenInput(Wire):
    input_name: str
    step_name: str | None = None
    data_type: str
    description: str | None = None
    default_value: JsonValue = None
    is_required: bool | None = None


class OpenOutput(Wire):
    output_name: str
    step_name: str | None = None
    data_type: str
    description: str | None = None


class Pipeline(Wire):
    pipeline_name: str
    created_at: str | None = None
    created_by: str | None = None
    steps: list[str] = []
    inputs: list[OpenInput] = []
    outputs: list[OpenOutput] = []
    open_inputs: list[OpenInput] = []
    open_outputs: list[OpenOutput] = []
    creation_info: CreationInfo | None = None


class PipelineListItem(Wire):
    pipeline_name: str
    created_at: str | None = None
    status: str | None = None


# -- runs and executions ---------------------------------------------------------------------

class RunRequest(Wire):
    """Running a pipeline: JSON, url-encoded or multipart (file inputs as file parts named
    after the input). In forms, ``json_inputs`` and the mappings are JSON text."""

    json_inputs: dict[str, JsonValue] | str | None = Field(
        default=None, examples=[{"input_data": {"values": [1, 2]}}])
    inputs: dict[str, JsonValue] | None = None
    inputs_mapping: list[dict[str, JsonValue]] | str | None = None
    outputs_mapping: list[dict[str, JsonValue]] | str | None = None


class ExecutionStarted(Wire):
    execution_id: str = Field(examples=["my-pipeline-3f2a9c"])


class StepExecution(Wire):
    name: str
    status: str
    start_date: str | None = None
    end_date: str | None = None
    commit_id: str | None = None
    repository_url: str | None = None
    repository_branch: str | None = None
    requirements_path: str | None = None
    origin: str | None = None


class ExecutionSummary(Wire):
    execution_id: str
    status: str = Field(examples=["Succeeded"])
    created_at: str | None = None
    created_by: str | None = None
    end_date: str | None = None
    pipeline_name: str | None = None
    deployment_name: str | None = None
    steps: list[StepExecution] | None = None


class ExecutionIO(Wire):
    data_type: str | None = None
    mapping_type: str | None = None
    mapping_value: dict[str, JsonValue] | None = None
    value: JsonValue = None


class Execution(ExecutionSummary):
    inputs: list[ExecutionIO] = []
    outputs: list[ExecutionIO] = []


class ExecutionOutputs(Wire):
    outputs: list[ExecutionIO] | dict[str, JsonValue]


class LogsQuery(Wire):
    """A window of log lines: ``from``/``to`` in milliseconds since the epoch."""

    from_: int | None = Field(default=None, alias="from", examples=[1764921600000])
    to: int | None = None
    limit: int | None = Field(default=None, examples=[100])


class LogLine(Wire):
    timestamp: str
    message: str


class Deleted(Wire):
    """What a deletion removed (its name or id)."""


# -- metrics ---------------------------------------------------------------------------------

class MetricValueRecord(Wire):
    value: float = Field(examples=[0.93])
    execution_id: str | None = None


class ListMetricValuesRecord(Wire):
    values: list[float] = Field(examples=[[0.5, 0.25]])
    execution_id: str | None = None


# -- deployments -----------------------------------------------------------------------------

class DeploymentCreate(Wire):
    """Creating an endpoint (``POST /endpoints``) or a periodic deployment
    (``POST /periodic-deployment``)."""

    name: str | None = Field(default=None, examples=["my-endpoint"])
    deployment_name: str | None = None
    pipeline_name: str = Field(examples=["my-pipeline"])
    mode: Literal["elastic", "low_latency"] | None = "elastic"
    schedule: str | None = Field(default=None, examples=["0 * * * *"])
    inputs_mapping: list[dict[str, JsonValue]] | str | None = None
    outputs_mapping: list[dict[str, JsonValue]] | str | None = None
    description: str | None = None
    enable_parallel_executions: bool | None = None
    max_parallel_executions_per_pod: int | None = None
    ram_request: str | None = None
    gpu_request: int | None = None
    timeout_s: float | None = None


class DeploymentUpdate(Wire):
    is_enabled: bool | None = None
    description: str | None = None
    reload: bool | None = None


class Deployment(Wire):
    name: str
    mode: str | None = None
    execution_rule: str | None = None
    status: str | None = None
    is_enabled: bool | None = None
    description: str | None = None
    endpoint_token: str | None = None
    schedule: str | None = None
    human_readable_schedule: str | None = None


class DeploymentListItem(Wire):
    name: str
    pipeline_name: str | None = None
    execution_rule: str | None = None
    mode: str | None = None
    status: str | None = None
    is_enabled: bool | None = None
    created_at: str | None = None


class EndpointToken(Wire):
    endpoint_token: str


class EndpointResult(Wire):
    """An endpoint's answer: its outputs (a file output answers its bytes instead)."""

    outputs: dict[str, JsonValue] = {}
    execution_id: str | None = None


# -- metrics answers, the data store's leftovers, health ---------------------------------------

class MetricItem(Wire):
    name: str
    value: float
    created_at: str | None = None
    execution_id: str | None = None
    deployment_name: str | None = None
    pipeline_name: str | None = None


class ListMetricsAdded(Wire):
    name: str
    added: int


class MetricPage(Wire):
    metrics: list[MetricItem]
    total_count: int


class ObjectPath(Wire):
    """A data store path, as JSON or a form field."""

    path_to_object: str = Field(examples=["datasets/iris.csv"])


class MultipartStarted(Wire):
    """A multipart upload begun: what the following part and end calls quote."""


class WorkerSeries(Wire):
    metric: dict[str, str]
    values: list[list[float]]


class ResourceMetricsAnswer(Wire):
    metrics: dict[str, list[WorkerSeries]]
    additional_data: dict[str, int]


class EndpointInputs(Wire):
    """An endpoint's inputs by name: a JSON object, or multipart with a file input as a
    file part named after it."""


class Health(Wire):
    status: str = Field(examples=["ok"])


class ServiceInfo(Wire):
    name: str
    version: str
    environment_url: str
    api: str
    docs: str


# -- craft-ai-sdk 0.74 routes ------------------------------------------------------------------

class SignedUrlAnswer(Wire):
    signed_url: str


class EndpointOutputV1(Wire):
    """``{"value": ...}`` for a value, ``{"url": ...}`` for a file to download."""

    value: JsonValue = None
    url: str | None = None


class EndpointResultV1(Wire):
    execution_id: str
    outputs: dict[str, EndpointOutputV1]


class ProjectInformation(Wire):
    environment_id: str | None = None
    language: str | None = Field(default=None, examples=["python:3.11-slim"])
    repository_url: str | None = None
    repository_branch: str | None = None
    has_repository_deploy_key: bool | None = None
    requirements_path: str | None = None
    included_folders: list[str] | None = None
    system_dependencies: list[str] | None = None


class EnvironmentInfo(Wire):
    environment_id: str | None = None
    environment_url: str | None = None
    platform: str | None = Field(default=None, examples=["gristmill"])
    version: str | None = None


class EndpointTokenChoice(Wire):
    """Optionally, the new endpoint token to set (craft-ai-sdk 0.74); else one is made."""

    endpoint_token: str | None = None
