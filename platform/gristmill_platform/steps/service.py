"""Step use cases: create (validate, record, hand to the builder), read, delete."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gristmill.languages import is_supported, substitute_language, unsupported_language_message
from gristmill_platform.auth import policy
from gristmill_platform.auth.principal import Principal
from gristmill_platform.datastore.backend import DataStoreBackend
from gristmill_platform.db.hooks import on_commit
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.db.types import utcnow
from gristmill_platform.errors import BadRequest, Conflict, NotFound
from gristmill_platform.settings import Settings
from gristmill_platform.steps.builds import archive_object_path
from gristmill_platform.steps.code import check_archive_size
from gristmill_platform.steps.names import validate_resource_name
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.steps.spec import (
    ProjectDefaults,
    parse_inputs,
    parse_outputs,
    relative_path,
    resolve_container_config,
)

MAX_ARCHIVE_BYTES = 10 * 1024 * 1024

logger = logging.getLogger(__name__)


class StepNotFound(NotFound):
    name = "StepNotFound"


@dataclass(frozen=True)
class NewStep:
    step: Step
    deploy_key: str | None


def project_defaults(settings: Settings) -> ProjectDefaults:
    return ProjectDefaults(
        language=settings.step_default_language or default_step_language(settings),
        repository_url=settings.step_default_repository_url,
        repository_branch=settings.step_default_repository_branch,
        repository_deploy_key=settings.step_default_repository_deploy_key,
        requirements_path=settings.step_default_requirements_path,
        included_folders=tuple(settings.step_default_included_folders),
        system_dependencies=tuple(settings.step_default_system_dependencies),
    )


def default_step_language(settings: Settings) -> str:
    """Locally, the Python that runs the control service (steps then need no other
    interpreter); on Kubernetes, the images' default."""
    from gristmill.languages import default_language

    if settings.executor == "local":
        local = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
        if is_supported(local):
            return local
    return default_language()


def hidden_step_name(pipeline_name: str) -> str:
    # ':' cannot appear in a user's step name, so this never collides with one
    return f"pipeline:{pipeline_name}"


class StepService:
    def __init__(self, repository: StepRepository, datastore: DataStoreBackend,
                 settings: Settings) -> None:
        self.repository = repository
        self.datastore = datastore
        self.settings = settings

    @property
    def session(self) -> Any:
        return self.repository.session

    async def create(
        self,
        fields: Mapping[str, Any],
        archive: IO[bytes] | None,
        principal: Principal,
        *,
        name: str,
        hidden: bool = False,
    ) -> NewStep:
        policy.require_create(principal, "Creating a step")
        if not hidden:
            validate_resource_name(name, "step")
        function_path = relative_path(fields.get("function_path"), "function_path")
        if not function_path.endswith(".py"):
            raise BadRequest(f"function_path {function_path!r} must be a Python file (.py)")
        function_name = fields.get("function_name")
        if not isinstance(function_name, str) or not function_name.isidentifier():
            raise BadRequest(f"function_name {function_name!r} must be the name of a Python "
                             "function defined in function_path")
        description = fields.get("description") or None
        inputs = parse_inputs(fields.get("inputs"))
        outputs = parse_outputs(fields.get("outputs"))
        defaults = project_defaults(self.settings)
        config, deploy_key = resolve_container_config(fields.get("container_config"), defaults)
        language, language_warning = substitute_language(config.language)
        if language_warning:
            logger.warning("step %s: %s", name, language_warning)
            config = dataclasses.replace(config, language=str(language))
        if not is_supported(config.language):
            raise BadRequest(unsupported_language_message(config.language, defaults.language),
                             name="UnsupportedLanguage")
        if config.dockerfile_path and self.settings.executor == "local":
            raise BadRequest(
                "dockerfile_path needs the Kubernetes backend: this environment runs steps "
                "in local virtual environments, not container images. Remove dockerfile_path "
                "(use requirements_path for Python packages).",
                name="DockerfileNotSupported",
            )
        if archive is not None:
            origin = "local"
        elif config.repository_url:
            origin = "git_repository"
        else:
            raise BadRequest(
                "The step has no code: give container_config.local_folder (a folder on your "
                "machine) or container_config.repository_url (a Git repository)")

        existing = await self.repository.by_name(name)
        if existing is not None:
            if existing.status != "creation_failed":
                kind = "pipeline" if hidden else "step"
                shown = name.removeprefix("pipeline:")
                raise Conflict(f"A {kind} named {shown!r} already exists", name="AlreadyExists")
            await self._remove(existing)  # a failed attempt is replaced by the new one

        now = utcnow()
        step = Step(
            id=str(uuid.uuid4()), name=name, function_path=function_path,
            function_name=function_name, description=description,
            inputs=[i.as_input() for i in inputs], outputs=[o.as_output() for o in outputs],
            container_config={**config.as_dict(),
                              **({"warnings": [language_warning]} if language_warning else {})},
            origin=origin, status="creation_pending",
            build_log="", is_hidden=hidden, created_by=principal.user_id,
            updated_by=principal.user_id, created_at=now, updated_at=now,
        )
        await self.repository.add(step)
        if archive is not None:
            await self._store_archive(step.id, archive)
        return NewStep(step=step, deploy_key=deploy_key)

    async def _store_archive(self, step_id: str, archive: IO[bytes]) -> None:
        with tempfile.NamedTemporaryFile(prefix="gristmill-step-", suffix=".tgz") as copy:
            size = 0
            while chunk := archive.read(1024 * 1024):
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise BadRequest("The step archive is larger than 10 MB compressed; the "
                                     "code limit is 5 MB", name="StepCodeTooLarge")
                copy.write(chunk)
            copy.flush()
            # refuse oversized code now, with a 413, rather than in the background build
            check_archive_size(Path(copy.name))
            await self.datastore.upload_from(Path(copy.name), archive_object_path(step_id))

    async def get(self, name: str) -> Step:
        step = await self.repository.by_name(name)
        if step is None or step.is_hidden:
            raise StepNotFound(f"Step {name!r} not found")
        return step

    async def list(self) -> Sequence[Step]:
        return await self.repository.list_visible()

    async def delete(self, name: str, principal: Principal, *, force: bool
                     ) -> tuple[Step, Sequence[Pipeline]]:
        step = await self.get(name)
        policy.require_owner(principal, step.created_by, f"Step {name!r}")
        pipelines = await self.repository.pipelines_using(step.id)
        for pipeline in pipelines:
            policy.require_owner(principal, pipeline.created_by, f"Pipeline {pipeline.name!r}")
        if pipelines and not force:
            names = ", ".join(p.name for p in pipelines)
            raise Conflict(
                f"Step {name!r} is used by pipeline(s) {names}: delete them first, or pass "
                "force_dependents_deletion=True to delete them with the step",
                name="StepInUse", additional_data={"pipelines": [p.name for p in pipelines]})
        hidden = [p.step_id for p in pipelines if p.owns_step and p.step_id != step.id]
        for pipeline in pipelines:
            await self.session.delete(pipeline)
        await self.session.flush()
        for step_id in hidden:  # a multi-step pipeline's graph step goes with it
            owned = await self.repository.get(step_id)
            if owned is not None:
                await self._remove(owned)
        await self._remove(step)
        return step, pipelines

    async def _remove(self, step: Step) -> None:
        step_id = step.id
        await self.datastore.delete(archive_object_path(step_id))
        await self.repository.delete(step)
        code = self.settings.data_dir / "steps" / step_id
        on_commit(self.session, lambda: shutil.rmtree(code, ignore_errors=True))

    async def download_url(self, name: str) -> str:
        step = await self.get(name)
        return await self.datastore.presign_download(archive_object_path(step.id))
