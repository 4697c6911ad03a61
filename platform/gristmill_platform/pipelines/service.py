"""Pipeline use cases."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.executions import Execution
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import BadRequest, Conflict, NotFound
from gristmill_platform.pipelines.build_logs import build_log_lines, log_window
from gristmill_platform.pipelines.graph import (
    GRAPH_ORIGIN,
    StepShape,
    build_graph,
    referenced_steps,
)
from gristmill_platform.pipelines.repository import PipelineRepository
from gristmill_platform.steps.names import validate_resource_name
from gristmill_platform.steps.service import StepService, hidden_step_name


class PipelineNotFound(NotFound):
    name = "PipelineNotFound"


class PipelineService:
    def __init__(self, repository: PipelineRepository, steps: StepService) -> None:
        self.repository = repository
        self.steps = steps

    @property
    def session(self) -> Any:
        return self.repository.session

    async def _free_name(self, name: str) -> None:
        found = await self.repository.with_step(name)
        if found is None:
            return
        pipeline, step = found
        if pipeline.owns_step and step.status == "creation_failed":
            # a failed creation is replaced by the new attempt
            await self.repository.delete(pipeline)
            await self.steps._remove(step)
            return
        raise Conflict(f"A pipeline named {name!r} already exists", name="AlreadyExists")

    async def create_from_step(self, name: object, step_names: object,
                               principal: Principal) -> tuple[Pipeline, Step]:
        policy.require_create(principal, "Creating a pipeline")
        name = validate_resource_name(name, "pipeline")
        if isinstance(step_names, str):
            step_names = [step_names]
        if not isinstance(step_names, list) or len(step_names) != 1 or not isinstance(
                step_names[0], str):
            raise BadRequest("step_names must name exactly one step; a multi-step pipeline "
                             "is created with nodes and outputs (docs/pipelines.md)")
        step = await self.steps.get(step_names[0])
        if step.status != "ready":
            raise BadRequest(f"Step {step.name!r} is not ready (status {step.status}): wait "
                             "for its creation to finish", name="StepNotReady")
        await self._free_name(name)
        pipeline = Pipeline(id=str(uuid.uuid4()), name=name, step_id=step.id, owns_step=False,
                            created_by=principal.user_id, created_at=utcnow(),
                            updated_at=utcnow())
        await self.repository.add(pipeline)
        return pipeline, step

    async def create_graph(self, name: object, raw_nodes: object, raw_outputs: object,
                           principal: Principal, description: object = None,
                           raw_bounds: object = None) -> tuple[Pipeline, Step]:
        """A multi-step pipeline: its graph checked (InvalidGraph, nothing written), then
        the pipeline and its hidden graph step, which declares the pipeline's inputs and
        outputs so that runs and deployments map them as for a one-step pipeline."""
        principal.require_user_scope("Creating a pipeline")
        name = validate_resource_name(name, "pipeline")
        shapes: dict[str, StepShape] = {}
        for step_name in referenced_steps(raw_nodes):
            found = await self.steps.repository.by_name(step_name)
            if found is not None and not found.is_hidden:
                shapes[step_name] = StepShape(found.id, found.name, found.status,
                                              found.inputs, found.outputs)
        graph = build_graph(raw_nodes, raw_outputs, shapes, raw_bounds)
        await self._free_name(name)
        now = utcnow()
        step = Step(
            id=str(uuid.uuid4()), name=hidden_step_name(name), function_path="",
            function_name="", description=description if isinstance(description, str)
            else None,
            inputs=[{k: v for k, v in i.items() if k != "description" or v is not None}
                    for i in graph["inputs"]],
            outputs=[{"name": o["name"], "data_type": o["data_type"],
                      "description": o.get("description")} for o in graph["outputs"]],
            container_config={}, origin=GRAPH_ORIGIN, status="ready", build_log="",
            is_hidden=True, created_by=principal.user_id, updated_by=principal.user_id,
            created_at=now, updated_at=now)
        await self.steps.repository.add(step)
        pipeline = Pipeline(id=str(uuid.uuid4()), name=name, step_id=step.id, owns_step=True,
                            graph=graph, created_by=principal.user_id, created_at=now,
                            updated_at=now)
        await self.repository.add(pipeline)
        return pipeline, step

    async def attach_hidden_step(self, name: str, step: Step, principal: Principal
                                 ) -> Pipeline:
        pipeline = Pipeline(id=str(uuid.uuid4()), name=name, step_id=step.id, owns_step=True,
                            created_by=principal.user_id, created_at=utcnow(),
                            updated_at=utcnow())
        await self.repository.add(pipeline)
        return pipeline

    async def prepare_function_pipeline(self, name: object) -> str:
        name = validate_resource_name(name, "pipeline")
        await self._free_name(name)
        return hidden_step_name(name)

    async def get(self, name: str) -> tuple[Pipeline, Step]:
        found = await self.repository.with_step(name)
        if found is None:
            raise PipelineNotFound(f"Pipeline {name!r} not found")
        return found

    async def all(self) -> Sequence[tuple[Pipeline, Step]]:
        return await self.repository.list_with_steps()

    async def latest_execution(self, name: str) -> Execution | None:
        pipeline, _ = await self.get(name)
        return await self.repository.latest_execution(pipeline.id)

    async def delete(self, name: str, principal: Principal) -> tuple[Pipeline, Step]:
        """Delete a pipeline whose deployments are already gone."""
        pipeline, step = await self.get(name)
        policy.require_owner(principal, pipeline.created_by, f"Pipeline {name!r}")
        await self.repository.delete(pipeline)
        if pipeline.owns_step:
            await self.steps._remove(step)
        return pipeline, step

    async def download_url(self, name: str) -> str:
        from gristmill_platform.steps.builds import archive_object_path

        _, step = await self.get(name)
        return await self.steps.datastore.presign_download(archive_object_path(step.id))

    async def build_logs(self, name: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        _, step = await self.get(name)
        return build_log_lines(step, log_window(body))
