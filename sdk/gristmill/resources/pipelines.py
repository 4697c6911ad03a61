"""Pipelines: what runs and gets deployed (contract §3.1-§3.5).

A pipeline wraps an existing step (``create_pipeline(name, step_name=...)``), or is
created straight from a function, with a hidden step built the same way as
``create_step``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from gristmill.errors import NotFoundError
from gristmill.io import Input, Output
from gristmill.resources._base import expect_dict, expect_list, path_segment
from gristmill.resources._creation import CreationMixin

if TYPE_CHECKING:
    from gristmill.resources.steps import StepsMixin

# Internal keys craft-ai-sdk strips from pipelines before returning them.
_INTERNAL_KEYS = ("is_archived", "pipeline_id")


def _public(pipeline: dict[str, Any]) -> dict[str, Any]:
    for key in _INTERNAL_KEYS:
        pipeline.pop(key, None)
    return pipeline


class PipelinesMixin(CreationMixin):
    def create_pipeline(
        self,
        pipeline_name: str,
        step_name: str | None = None,
        function_path: str | None = None,
        function_name: str | None = None,
        description: str | None = None,
        container_config: dict[str, Any] | None = None,
        inputs: Sequence[Input] | None = None,
        outputs: Sequence[Output] | None = None,
        timeout_s: float = 180,
        pipeline: Any = None,
    ) -> dict[str, Any]:
        """Create a pipeline, from an existing step or straight from a function, or a
        multi-step pipeline from a ``@pipeline`` function (``pipeline=``).

        ``create_pipeline("p", step_name="s")`` wraps the step ``s``. Otherwise the
        arguments are those of ``create_step`` and the pipeline's code is built (waiting
        up to ``timeout_s``).

        Returns:
            The pipeline: ``pipeline_name``, ``created_at``, ``inputs`` and ``outputs``
            (each with ``input_name``/``output_name``, ``data_type``...), and for a
            pipeline built from code ``container_config`` and ``creation_info``.

        With ``pipeline=``, the folder holding the function's module is packaged
        (``container_config`` may override ``local_folder``, ``requirements_path``,
        ``included_folders``, ``language``...), each ``@step`` it calls is created as the
        step ``<pipeline_name>-<step name>`` (replacing one of that name), then the graph.

        Raises:
            StepCodeError, CreationFailedError, CreationTimeoutError: as for
            ``create_step``.
        """
        if pipeline is not None:
            if any(a is not None for a in (step_name, function_path, function_name, inputs,
                                            outputs)):
                raise ValueError("Pass pipeline= alone (with container_config, description "
                                 "and timeout_s if needed), not step or function arguments.")
            return self._create_graph_pipeline(pipeline_name, pipeline, description,
                                               container_config, timeout_s)
        if step_name is not None:
            code_arguments = (function_path, function_name, container_config, inputs, outputs)
            if any(argument is not None for argument in code_arguments):
                raise ValueError(
                    "Pass either step_name (a pipeline around an existing step) or the "
                    "function arguments (function_path, container_config...), not both."
                )
            created = self._transport.request(
                "POST",
                self._api_url("/pipelines"),
                json={"pipeline_name": pipeline_name, "step_names": [step_name]},
            )
            return _public(expect_dict(created, "POST /pipelines"))

        _, pipeline = self._create_from_code(
            kind="pipeline",
            collection="pipelines",
            name_field="pipeline_name",
            name=pipeline_name,
            function_path=function_path,
            function_name=function_name,
            description=description,
            container_config=container_config,
            inputs=inputs,
            outputs=outputs,
            timeout_s=timeout_s,
            fetch=self.get_pipeline,
        )
        return _public(pipeline)

    def _create_graph_pipeline(self, pipeline_name: str, definition: Any,
                               description: str | None,
                               container_config: dict[str, Any] | None, timeout_s: float
                               ) -> dict[str, Any]:
        from gristmill.authoring import Pipeline

        if not isinstance(definition, Pipeline):
            raise ValueError("pipeline= takes a function decorated with @pipeline")
        steps_api = cast("StepsMixin", self)  # the Gristmill client has both mixins
        graph = definition.record()
        config = dict(container_config or {})
        folder = os.path.abspath(str(config.get("local_folder") or definition.folder))
        config["local_folder"] = folder
        step_names = {}
        for name, step in graph.steps.items():
            module = os.path.abspath(step.module_file)
            relative = os.path.relpath(module, folder)
            if relative.startswith(".."):
                raise ValueError(f"Step {name!r} is defined in {module}, outside the "
                                 f"packaged folder {folder}")
            created_name = f"{pipeline_name}-{name}"
            if steps_api.get_step(created_name) is not None:
                steps_api.delete_step(created_name, force_dependents_deletion=True)
            steps_api.create_step(
                step_name=created_name, function_path=relative.replace(os.sep, "/"),
                function_name=step.entry_name, container_config=config,
                inputs=[Input(**i) for i in step.inputs],
                outputs=[Output(**o) for o in step.outputs], timeout_s=timeout_s)
            step_names[name] = created_name
        body: dict[str, Any] = {
            "pipeline_name": pipeline_name,
            "nodes": [{**{k: v for k, v in n.items() if k != "step"},
                       "step_name": step_names[n["step"]]} for n in graph.nodes],
            "outputs": graph.outputs}
        if graph.metric_bounds:
            body["metric_bounds"] = graph.metric_bounds
        if description is not None:
            body["description"] = description
        created = self._transport.request("POST", self._api_url("/pipelines"), json=body)
        return _public(expect_dict(created, "POST /pipelines"))

    def get_pipeline(self, pipeline_name: str) -> dict[str, Any] | None:
        """The pipeline named ``pipeline_name`` with its ``last_execution_id``, or
        ``None`` if there is none."""
        base = f"/pipelines/{path_segment(pipeline_name)}"
        try:
            pipeline = expect_dict(
                self._transport.request("GET", self._api_url(base)), "GET /pipelines/{name}"
            )
        except NotFoundError:
            return None
        latest = self._transport.request("GET", self._api_url(f"{base}/executions/latest"))
        # No execution yet: 204, null or {} (never a 404, contract §3.2).
        pipeline["last_execution_id"] = (
            latest.get("execution_id") if isinstance(latest, dict) else None
        )
        return _public(pipeline)

    def list_pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline: dicts with ``pipeline_name``, ``created_at`` and ``status``."""
        return expect_list(
            self._transport.request("GET", self._api_url("/pipelines")), "GET /pipelines"
        )

    def delete_pipeline(
        self, pipeline_name: str, force_deployments_deletion: bool = False
    ) -> dict[str, Any]:
        """Delete a pipeline and its executions.

        Args:
            force_deployments_deletion: Also delete its deployments (otherwise a deployed
                pipeline is not deleted).

        Returns:
            ``{"pipeline": {"name": ...}, "deployments": [{"name", "execution_rule"}]}``.
        """
        return expect_dict(
            self._transport.request(
                "DELETE",
                self._api_url(f"/pipelines/{path_segment(pipeline_name)}"),
                params={"force_deployments_deletion": str(bool(force_deployments_deletion))},
            ),
            "DELETE /pipelines/{name}",
        )

    def download_pipeline_local_folder(
        self, pipeline_name: str, folder: str | os.PathLike[str]
    ) -> None:
        """Save the code a pipeline was created with as ``{folder}/{pipeline_name}.tgz``.

        Only for pipelines created from a ``local_folder``.
        """
        self._download_code_archive("pipelines", pipeline_name, folder)
