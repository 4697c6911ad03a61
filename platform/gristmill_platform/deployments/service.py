"""Deployment use cases: create (validated against the documented rules), read, update,
delete, rotate the endpoint token, and turn a trigger or a fire time into an execution."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import IO, Any

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.deployments import Deployment, DeploymentLog
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.types import utcnow
from gristmill_platform.deployments import tokens
from gristmill_platform.deployments.endpoint_options import (
    DEFAULT_CREATION_TIMEOUT_S,
    chosen_endpoint_token,
    creation_timeout,
    endpoint_url_path,
    execution_timeout,
)
from gristmill_platform.deployments.repository import DeploymentRepository
from gristmill_platform.deployments.rules import (
    InvalidDeployment,
    check_mode_options,
    check_rule_and_mode,
    complete_mappings,
)
from gristmill_platform.deployments.schedule import next_fire, validate_schedule
from gristmill_platform.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from gristmill_platform.executions import transitions as t
from gristmill_platform.executions.io import plan_outputs, resolve_deployment_inputs
from gristmill_platform.executions.service import (
    ExecutionService,
    Launch,
    from_unix_ms,
    parse_mapping_field,
)
from gristmill_platform.pipelines.service import PipelineService
from gristmill_platform.steps.names import validate_resource_name
from gristmill_platform.steps.repository import StepRepository

MAX_LOG_LIMIT = 100_000


class DeploymentNotFound(NotFound):
    name = "DeploymentNotFound"


def check_endpoint_token(name: str, deployment: Deployment | None, token: str | None
                         ) -> Deployment:
    """The endpoint deployment a caller with token may trigger, or the 404/401 to answer."""
    if deployment is None or deployment.execution_rule != "endpoint":
        # same answer with or without a token: names are not secret, but don't help
        raise DeploymentNotFound(f"Endpoint {name!r} not found")
    if not token:
        raise Unauthorized("Missing endpoint token: send 'Authorization: EndpointToken "
                           "<token>'", name="MissingEndpointToken")
    if not tokens.matches(token, deployment.token_hash):
        raise Unauthorized("Invalid endpoint token", name="InvalidEndpointToken")
    return deployment


def check_triggerable(deployment: Deployment) -> None:
    if not deployment.is_enabled:
        raise Forbidden(f"Deployment {deployment.name!r} is disabled: enable it with "
                        "update_deployment(is_enabled=True)", name="DeploymentDisabled")
    # a low-latency worker being recreated holds new requests until it is back
    if deployment.status not in ("up", "down_retrying"):
        raise Conflict(f"Deployment {deployment.name!r} is not ready (status "
                       f"{deployment.status})", name="DeploymentNotReady")


class DeploymentService:
    def __init__(self, repository: DeploymentRepository, pipelines: PipelineService,
                 executions: ExecutionService, *, secret_key: str, gpu_available: bool) -> None:
        self.repository = repository
        self.pipelines = pipelines
        self.executions = executions
        self.secret_key = secret_key
        self.gpu_available = gpu_available

    @property
    def session(self) -> Any:
        return self.repository.session

    # -- lifecycle ----------------------------------------------------------------------------

    async def create(self, rule: str, body: Mapping[str, Any], principal: Principal
                     ) -> tuple[Deployment, str | None]:
        policy.require_create(principal, "Creating a deployment")
        name = validate_resource_name(body.get("name") or body.get("deployment_name"),
                                      "deployment")
        rule, mode = check_rule_and_mode(rule, body.get("mode", "elastic"))
        options = check_mode_options(mode, body, gpu_available=self.gpu_available)
        schedule = body.get("schedule")
        if rule == "periodic":
            schedule = validate_schedule(schedule)
        elif schedule is not None:
            raise InvalidDeployment("schedule only applies to periodic deployments")
        pipeline, step = await self.pipelines.get(str(body.get("pipeline_name")))
        if step.status != "ready":
            raise BadRequest(f"Pipeline {pipeline.name!r} is not ready (its step is "
                             f"{step.status})", name="PipelineNotReady")
        if mode == "low_latency":
            # a multi-step pipeline's nodes run on warm workers of their steps
            for built in await self._steps_run_by(pipeline, step):
                if built.container_config.get("dockerfile_path"):
                    raise InvalidDeployment("low_latency is not available for steps built "
                                            f"from a dockerfile_path ({built.name!r})")
        inputs, outputs = complete_mappings(
            rule, step.inputs, step.outputs,
            parse_mapping_field(body.get("inputs_mapping"), "inputs_mapping"),
            parse_mapping_field(body.get("outputs_mapping"), "outputs_mapping"))
        timeout = creation_timeout(body.get("timeout_s", DEFAULT_CREATION_TIMEOUT_S))
        url_path = endpoint_url_path(body.get("endpoint_url_path"), rule, name)
        chosen_token = chosen_endpoint_token(body.get("endpoint_token"), rule)
        execution_timeout_s = execution_timeout(body.get("execution_timeout_s"))
        if await self.repository.by_name(name) is not None:
            raise Conflict(f"A deployment named {name!r} already exists", name="AlreadyExists")
        if url_path is not None and await self.repository.by_endpoint_path(url_path) is not None:
            raise Conflict(f"Another endpoint already answers at /endpoints/{url_path}",
                           name="EndpointUrlPathTaken")
        now = utcnow()
        token = tokens.new_endpoint_token(self.secret_key, chosen_token) \
            if rule == "endpoint" else None
        deployment = Deployment(
            id=str(uuid.uuid4()), name=name, pipeline_id=pipeline.id,
            pipeline_name=pipeline.name, execution_rule=rule, mode=mode,
            description=body.get("description") or None, is_enabled=True,
            # elastic and periodic need nothing started: they are up at once
            status="up" if mode == "elastic" else "creation_pending",
            inputs_mapping=inputs, outputs_mapping=outputs, schedule=schedule,
            next_fire_at=next_fire(schedule, now) if schedule else None,
            enable_parallel_executions=options.enable_parallel_executions,
            max_parallel_executions_per_pod=options.max_parallel_executions_per_pod,
            ram_request=options.ram_request, gpu_request=options.gpu_request,
            timeout_s=timeout, execution_timeout_s=execution_timeout_s,
            endpoint_url_path=url_path, token_hash=token.digest if token else None,
            token_encrypted=token.encrypted if token else None, generation=1,
            created_by=principal.user_id, updated_by=principal.user_id,
            created_at=now, updated_at=now,
        )
        await self.repository.add(deployment)
        return deployment, token.plaintext if token else None

    async def _steps_run_by(self, pipeline: Pipeline, step: Step) -> list[Step]:
        """The steps whose code an execution of the pipeline runs: its step, or the steps of
        a multi-step pipeline's nodes."""
        if pipeline.graph is None:
            return [step]
        found = await StepRepository(self.session).by_ids(
            node["step_id"] for node in pipeline.graph["nodes"])
        return sorted(found.values(), key=lambda s: s.name)

    async def get(self, name: str) -> Deployment:
        deployment = await self.repository.by_name(name)
        if deployment is None:
            raise DeploymentNotFound(f"Deployment {name!r} not found")
        return deployment

    async def with_step(self, name: str) -> tuple[Deployment, Pipeline, Step]:
        deployment = await self.get(name)
        pipeline, step = await self.pipelines.get(deployment.pipeline_name)
        return deployment, pipeline, step

    def token_of(self, deployment: Deployment, principal: Principal) -> str | None:
        """The endpoint token, for those allowed to see it (auth/policy.py), else None."""
        if not policy.endpoint_token_visible(principal, deployment.created_by):
            return None
        return tokens.reveal(deployment.token_encrypted, self.secret_key)

    async def all(self) -> Sequence[Deployment]:
        return await self.repository.all()

    async def update(self, name: str, body: Mapping[str, Any], principal: Principal
                     ) -> Deployment:
        deployment = await self.get(name)
        policy.require_owner(principal, deployment.created_by, f"Deployment {name!r}")
        if "is_enabled" in body:
            if not isinstance(body["is_enabled"], bool):
                raise BadRequest("is_enabled must be true or false")
            deployment.is_enabled = body["is_enabled"]
            if deployment.is_enabled and deployment.schedule:
                deployment.next_fire_at = next_fire(deployment.schedule, utcnow())
        if "description" in body:
            deployment.description = body["description"] or None
        if body.get("schedule") is not None:
            if deployment.execution_rule != "periodic":
                raise InvalidDeployment("schedule only applies to periodic deployments")
            deployment.schedule = validate_schedule(body["schedule"])
            deployment.next_fire_at = next_fire(deployment.schedule, utcnow())
        if body.get("inputs_mapping") is not None or body.get("outputs_mapping") is not None:
            await self._remap(deployment, body)
        if "execution_timeout_s" in body:
            deployment.execution_timeout_s = execution_timeout(body["execution_timeout_s"])
        if deployment.mode == "low_latency" and body.get("reload", True):
            deployment.generation += 1  # workers roll to pick up code and env changes
            deployment.status = "creation_pending"
        deployment.updated_by, deployment.updated_at = principal.user_id, utcnow()
        return deployment

    async def _remap(self, deployment: Deployment, body: Mapping[str, Any]) -> None:
        """New mappings, checked as at creation; a side left out keeps its mappings."""
        _, step = await self.pipelines.get(deployment.pipeline_name)
        inputs, outputs = complete_mappings(
            deployment.execution_rule, step.inputs, step.outputs,
            deployment.inputs_mapping if body.get("inputs_mapping") is None
            else parse_mapping_field(body["inputs_mapping"], "inputs_mapping"),
            deployment.outputs_mapping if body.get("outputs_mapping") is None
            else parse_mapping_field(body["outputs_mapping"], "outputs_mapping"))
        deployment.inputs_mapping, deployment.outputs_mapping = inputs, outputs

    async def delete(self, name: str, principal: Principal) -> tuple[Deployment, list[Any]]:
        """Deletes the deployment with its executions (as documented); returns the handles
        of executions still running so their workers can be stopped."""
        deployment = await self.get(name)
        policy.require_owner(principal, deployment.created_by, f"Deployment {name!r}")
        running = []
        for execution in await self.repository.executions(deployment.id):
            if execution.status in t.ACTIVE and execution.handle:
                running.append(execution.handle)
            await self.executions.delete(execution)
        await self.repository.delete(deployment)
        return deployment, running

    async def delete_for_pipeline(self, pipeline: Pipeline, principal: Principal, *,
                                  force: bool) -> tuple[list[dict[str, str]], list[Any]]:
        """Deletes the pipeline's deployments (with force); returns them, and the handles of
        their executions still running, whose workers must be stopped as delete's are."""
        deployments = await self.repository.for_pipeline(pipeline.id)
        if deployments and not force:
            names = ", ".join(d.name for d in deployments)
            raise Conflict(f"Pipeline {pipeline.name!r} has deployment(s) {names}: delete them "
                           "first, or pass force_deployments_deletion=True",
                           name="PipelineDeployed",
                           additional_data={"deployments": [d.name for d in deployments]})
        removed: list[dict[str, str]] = []
        running: list[Any] = []
        for deployment in deployments:
            _, handles = await self.delete(deployment.name, principal)
            running += handles
            removed.append({"name": deployment.name,
                            "execution_rule": deployment.execution_rule})
        return removed, running

    async def rotate_token(self, name: str, principal: Principal, chosen: object = None
                           ) -> str:
        deployment = await self.get(name)
        policy.require_owner(principal, deployment.created_by, f"Deployment {name!r}")
        if deployment.execution_rule != "endpoint":
            raise BadRequest(f"Deployment {name!r} is periodic: it has no endpoint token")
        token = tokens.new_endpoint_token(self.secret_key,
                                          chosen_endpoint_token(chosen, "endpoint"))
        deployment.token_hash, deployment.token_encrypted = token.digest, token.encrypted
        deployment.updated_by, deployment.updated_at = principal.user_id, utcnow()
        return token.plaintext

    async def logs(self, name: str, body: Mapping[str, Any]) -> Sequence[DeploymentLog]:
        deployment = await self.get(name)
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_LOG_LIMIT):
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LOG_LIMIT}")
        return await self.repository.logs(
            deployment.id, start=from_unix_ms(body.get("from"), "from"),
            end=from_unix_ms(body.get("to"), "to"), limit=limit)

    async def record_logs(self, deployment_id: str, lines: Sequence[tuple[datetime, str, str]]
                          ) -> None:
        await self.repository.add_logs([
            DeploymentLog(deployment_id=deployment_id, timestamp=when, pod_id=pod,
                          type="deployment", message=message[:16384])
            for when, pod, message in lines])

    # -- executions ---------------------------------------------------------------------------

    async def authorize_endpoint(self, path: str, token: str | None) -> Deployment:
        """The endpoint answering at /endpoints/<path>, if token is its token."""
        deployment = await self.repository.by_endpoint_path(path)
        return check_endpoint_token(path, deployment, token)

    async def trigger_as_user(self, name: str, body: Mapping[str, Any],
                              files: Mapping[str, tuple[str, IO[bytes]]],
                              principal: Principal) -> Launch:
        """An endpoint triggered with an SDK token instead of its endpoint token
        (craft-ai-sdk 0.74's trigger_endpoint without endpoint_token)."""
        policy.require_create(principal, "Triggering a deployment")
        deployment = await self.get(name)
        if deployment.execution_rule != "endpoint":
            raise BadRequest(f"Deployment {name!r} is periodic: it runs on its schedule and "
                             "cannot be triggered", name="NotAnEndpoint")
        return await self.trigger(deployment, body, files)

    async def trigger(self, deployment: Deployment, body: Mapping[str, Any],
                      files: Mapping[str, tuple[str, IO[bytes]]], *,
                      pipeline_name: str | None = None, shadow: bool = False) -> Launch:
        """An execution of the deployment, on pipeline_name when its traffic rule picked
        another pipeline than its own (docs/rollout.md)."""
        check_triggerable(deployment)
        pipeline, step = await self.pipelines.get(pipeline_name or deployment.pipeline_name)
        resolved = resolve_deployment_inputs(step.inputs, deployment.inputs_mapping, body,
                                             set(files), await self.executions.environment())
        plans = plan_outputs(step.outputs, deployment.outputs_mapping, allow_endpoint=True)
        assert deployment.created_by is not None
        return await self.executions.record(pipeline, step, resolved, plans, files,
                                            created_by=deployment.created_by,
                                            deployment=deployment, shadow=shadow)

    async def fire(self, deployment: Deployment, now: datetime) -> Launch | None:
        """One periodic fire: advance the schedule first, so a failure to start the
        execution never makes the scheduler fire the same time again."""
        assert deployment.schedule
        deployment.last_fire_at = now
        # fire times missed while the service was down are not replayed one by one: the
        # schedule resumes from now (one catch-up execution, see docs/deployments.md)
        deployment.next_fire_at = next_fire(deployment.schedule, now)
        pipeline, step = await self.pipelines.get(deployment.pipeline_name)
        if step.status != "ready":
            return None
        resolved = resolve_deployment_inputs(step.inputs, deployment.inputs_mapping, {},
                                             set(), await self.executions.environment())
        plans = plan_outputs(step.outputs, deployment.outputs_mapping)
        assert deployment.created_by is not None
        return await self.executions.record(pipeline, step, resolved, plans, {},
                                            created_by=deployment.created_by,
                                            deployment=deployment)
