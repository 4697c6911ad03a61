"""Steps: a function and its code, built once, run by pipelines (contract §2)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from gristmill.errors import NotFoundError
from gristmill.io import Input, Output
from gristmill.languages import substitute_language
from gristmill.resources._base import expect_dict, expect_list, path_segment
from gristmill.resources._creation import CreationMixin, without_creation_id


class StepsMixin(CreationMixin):
    def create_step(
        self,
        step_name: str,
        function_path: str | None = None,
        function_name: str | None = None,
        description: str | None = None,
        container_config: dict[str, Any] | None = None,
        inputs: Sequence[Input] | None = None,
        outputs: Sequence[Output] | None = None,
        timeout_s: float = 180,
    ) -> dict[str, Any]:
        """Create a step from a function in a local folder or a git repository, and wait
        until it is built.

        Args:
            step_name: Name of the step (letters, digits, ``-`` and ``_``).
            function_path: File of the function, relative to the folder or repository.
            function_name: Name of the function in that file.
            description: Free text.
            container_config: Build settings, each falling back on the environment's
                default: ``local_folder`` (send this folder's code), ``language`` (e.g.
                ``"python:3.11-slim"``), ``requirements_path``, ``included_folders``
                (what to send, default everything; at most 5 MB), ``system_dependencies``,
                ``dockerfile_path``, ``repository_url``, ``repository_branch``,
                ``repository_deploy_key``. ``CREATION_PARAMETER_VALUE.NULL`` sets one to
                nothing.
            inputs: The function's parameters, as ``gristmill.io.Input``.
            outputs: The keys of the dict it returns, as ``gristmill.io.Output``.
            timeout_s: How long to wait for the build (at least 120 s).

        Returns:
            The step: ``parameters`` (what it was created with) and ``creation_info``
            (``status`` ``"ready"``, ``origin``, dates...).

        Raises:
            StepCodeError: the folder or a path is missing, or the code exceeds 5 MB.
            CreationFailedError: the build failed; the error shows the build log.
            CreationTimeoutError: still building after ``timeout_s``.
        """
        _, language_warning = substitute_language((container_config or {}).get("language"))
        if language_warning:
            warnings.warn(language_warning, UserWarning, stacklevel=2)
        _, step = self._create_from_code(
            kind="step",
            collection="steps",
            name_field="step_name",
            name=step_name,
            function_path=function_path,
            function_name=function_name,
            description=description,
            container_config=container_config,
            inputs=inputs,
            outputs=outputs,
            timeout_s=timeout_s,
            fetch=self.get_step,
        )
        return without_creation_id(step)

    def get_step(self, step_name: str) -> dict[str, Any] | None:
        """The step named ``step_name``, or ``None`` if there is none.

        Returns:
            dict with ``parameters`` and ``creation_info`` (``status`` is
            ``"creation_pending"``, ``"ready"`` or ``"creation_failed"``).
        """
        try:
            step = self._transport.request(
                "GET", self._api_url(f"/steps/{path_segment(step_name)}")
            )
        except NotFoundError:
            return None
        return without_creation_id(expect_dict(step, "GET /steps/{step_name}"))

    def list_steps(self) -> list[dict[str, Any]]:
        """Every step of the environment.

        Returns:
            list of dicts with ``step_name``, ``status``, ``created_at``, ``updated_at``,
            ``origin``, ``repository_url``, ``repository_branch``, ``commit_id``.
        """
        return expect_list(self._transport.request("GET", self._api_url("/steps")), "GET /steps")

    def delete_step(
        self, step_name: str, force_dependents_deletion: bool = False
    ) -> dict[str, Any]:
        """Delete a step.

        Args:
            step_name: Name of the step.
            force_dependents_deletion: Also delete the pipelines, executions and
                deployments that use it (otherwise a step in use is not deleted).

        Returns:
            dict with ``step_name``.
        """
        return expect_dict(
            self._transport.request(
                "DELETE",
                self._api_url(f"/steps/{path_segment(step_name)}"),
                # Python's capitalised booleans, as craft-ai-sdk sends them.
                params={"force_dependents_deletion": str(bool(force_dependents_deletion))},
            ),
            "DELETE /steps/{step_name}",
        )

    def download_step_local_folder(self, step_name: str, folder: str | os.PathLike[str]) -> None:
        """Save the code a step was created with as ``{folder}/{step_name}.tgz``.

        Only for steps created from a ``local_folder``.
        """
        self._download_code_archive("steps", step_name, folder)
