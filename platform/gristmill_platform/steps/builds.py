"""Building steps in the background: code on disk, then what runs it.

Locally that is a Python environment on this machine (steps/environments.py); on the
Kubernetes backend, an image built in the cluster (steps/image_builds.py).

A build runs outside any request: it opens its own short transactions, so a slow pip
install never holds a database connection or a client's request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gristmill_platform.db.types import utcnow
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.errors import AppError
from gristmill_platform.steps.build_log import BuildLog
from gristmill_platform.steps.code import extract_archive, function_defined, select_included
from gristmill_platform.steps.environments import (
    EnvironmentBuilder,
    EnvironmentBuildError,
    environment_key,
    interpreter_for,
)
from gristmill_platform.steps.git import clone, redact
from gristmill_platform.steps.image_builds import ImageBuildError, ImageRequest, StepImages
from gristmill_platform.steps.repository import StepRepository
from gristmill_platform.telemetry.metrics import STEP_BUILD_DURATION, STEP_BUILDS
from gristmill_platform.timeouts import within

if TYPE_CHECKING:
    from gristmill_platform.datastore.backend import DataStoreFor
    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.settings import Settings

log = logging.getLogger("gristmill.steps")
SYSTEM_DEPENDENCIES_NOTE = (
    "system_dependencies are recorded but not installed: the local backend runs steps in "
    "virtual environments on this machine and cannot install system packages. Install "
    "them on the machine yourself, or use the Kubernetes backend, which builds them into "
    "the step's image."
)
OWN_DOCKERFILE_NOTE = (
    "requirements_path and system_dependencies are not applied to a step with "
    "dockerfile_path: its Dockerfile installs what the step needs."
)


def archive_object_path(step_id: str) -> str:
    return f".gristmill/steps/{step_id}/code.tgz"


@dataclass(frozen=True)
class BuildPlan:
    step_id: str
    origin: str
    function_path: str
    language: str
    requirements_path: str | None
    repository_url: str | None
    repository_branch: str | None
    included_folders: list[str]
    system_dependencies: list[str]
    dockerfile_path: str | None = None
    step_name: str = ""
    function_name: str = ""


class StepBuilds:
    def __init__(self, settings: Settings, transactions: Transactions, datastore: DataStoreFor,
                 environments: EnvironmentBuilder, images: StepImages | None = None) -> None:
        self.settings = settings
        self.transactions = transactions
        self.datastore = datastore
        self.environments = environments
        # Kubernetes backend: steps get images, not local environments. Built here, so a
        # setting that cannot work (a local data store) stops the service at start-up.
        if images is None and settings.executor == "kubernetes":
            images = StepImages.from_settings(settings, transactions, datastore)
        self.images = images
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def code_dir(self, step_id: str) -> Path:
        return self.settings.data_dir / "steps" / step_id / "code"

    def environment_dir(self, key: str) -> Path:
        return self.environments.path_of(key)

    def schedule(self, step_id: str, deploy_key: str | None = None, *,
                 resumed: bool = False) -> None:
        if step_id in self._tasks and not self._tasks[step_id].done():
            return
        task = asyncio.get_running_loop().create_task(
            self._build(step_id, deploy_key, resumed=resumed))
        self._tasks[step_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(step_id, None))

    async def wait(self, step_id: str, timeout: float) -> None:
        task = self._tasks.get(step_id)
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await within(asyncio.shield(task), timeout)

    async def resume(self) -> None:
        """Builds interrupted by a restart start again; on Kubernetes, a build Job still
        running in the cluster is joined, not started anew."""
        async with self.transactions() as session:
            pending = [s.id for s in await StepRepository(session).pending()]
        for step_id in pending:
            self.schedule(step_id, self.settings.step_default_repository_deploy_key,
                          resumed=True)

    async def prune_environments(self) -> list[str]:
        """Remove the local environments no step uses any more (after a step is deleted,
        and at start-up). Skipped while a build runs: it may have made an environment and
        not yet recorded its key on its step."""
        if any(not task.done() for task in self._tasks.values()):
            return []
        async with self.transactions() as session:
            used = await StepRepository(session).environment_keys()
        removed = await self.environments.remove_unused(used)
        if removed:
            log.info("removed %d unused step environment(s)", len(removed))
        return removed

    async def shutdown(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(BaseException):
                await task

    async def _plan(self, step_id: str) -> tuple[BuildPlan, dict[str, str]] | None:
        async with self.transactions() as session:
            step = await StepRepository(session).get(step_id)
            if step is None:
                return None
            config = step.container_config
            plan = BuildPlan(
                step_id=step.id, origin=step.origin, function_path=step.function_path,
                language=config["language"], requirements_path=config.get("requirements_path"),
                repository_url=config.get("repository_url"),
                repository_branch=config.get("repository_branch"),
                included_folders=list(config.get("included_folders") or ["/"]),
                system_dependencies=list(config.get("system_dependencies") or []),
                dockerfile_path=config.get("dockerfile_path"), step_name=step.name,
                function_name=step.function_name,
            )
            variables = {v.name: v.value for v in await EnvVarRepository(session).list()}
            return plan, variables

    async def _build(self, step_id: str, deploy_key: str | None, *,
                     resumed: bool = False) -> None:
        build_log = BuildLog()
        warnings: list[str] = []
        note = build_log.note
        status, reason, commit_id, key, image = "creation_failed", None, None, None, None
        interrupted = False
        started: float | None = None  # once there is a step to build (for the metrics)
        try:
            planned = await self._plan(step_id)
            if planned is None:
                return
            started = time.monotonic()
            plan, variables = planned
            commit_id = await self._prepare_code(plan, deploy_key, note)
            code = self.code_dir(step_id)
            requirements_file = self._check_code(plan, code)
            if self.images is not None:
                if plan.dockerfile_path and (plan.requirements_path
                                             or plan.system_dependencies):
                    warnings.append(OWN_DOCKERFILE_NOTE)
                    note(OWN_DOCKERFILE_NOTE)
                image = await self.images.build(
                    _image_request(plan), code, build_log,
                    lambda: self._record_progress(step_id, build_log), resumed=resumed)
            else:
                key = await self._build_environment(plan, requirements_file, variables,
                                                    note, warnings)
            status = "ready"
            note("Step ready")
        except asyncio.CancelledError:
            interrupted = True  # stays pending: resume() builds it again on the next start
            raise
        except (AppError, EnvironmentBuildError, ImageBuildError) as exc:
            reason = exc.message if isinstance(exc, AppError) else exc.reason
            note(f"Build failed: {reason}")
        except Exception as exc:  # report, never leave a step pending forever
            log.exception("step build %s crashed", step_id)
            reason = f"Internal error while building the step: {type(exc).__name__}: {exc}"
            note(reason)
        finally:
            if not interrupted:
                await self._record(step_id, status, reason, commit_id, key, build_log.lines,
                                   warnings, image)
                if started is not None:
                    outcome = "ready" if status == "ready" else "failed"
                    STEP_BUILDS.labels(outcome).inc()
                    STEP_BUILD_DURATION.labels(outcome).observe(time.monotonic() - started)

    @staticmethod
    def _check_code(plan: BuildPlan, code: Path) -> Path | None:
        """The files the step names exist in its code; returns the requirements file."""
        function_file = code / plan.function_path
        if not function_file.is_file():
            raise EnvironmentBuildError(
                f"function_path {plan.function_path!r} is not a file in the step's code")
        source = function_file.read_text(encoding="utf-8", errors="replace")
        if plan.function_name and function_defined(source, plan.function_name) is False:
            raise EnvironmentBuildError(
                f"function_name {plan.function_name!r} is not defined in "
                f"{plan.function_path!r}: define it there (def {plan.function_name}(...):) "
                "or give the name of a function of that file")
        if plan.dockerfile_path and not (code / plan.dockerfile_path).is_file():
            raise EnvironmentBuildError(
                f"dockerfile_path {plan.dockerfile_path!r} is not a file in the step's code")
        if not plan.requirements_path:
            return None
        requirements_file = code / plan.requirements_path
        if not requirements_file.is_file() and not plan.dockerfile_path:
            raise EnvironmentBuildError(
                f"requirements_path {plan.requirements_path!r} is not a file in the "
                "step's code")
        return requirements_file

    async def _build_environment(self, plan: BuildPlan, requirements_file: Path | None,
                                 variables: dict[str, str], note: Callable[[str], None],
                                 warnings: list[str]) -> str:
        """The local backend: a virtual environment shared by steps with the same
        interpreter and requirements. Returns its key."""
        if plan.system_dependencies:
            warnings.append(SYSTEM_DEPENDENCIES_NOTE)
            note(SYSTEM_DEPENDENCIES_NOTE)
        interpreter = interpreter_for(plan.language)
        if interpreter.note:
            warnings.append(interpreter.note)
            note(interpreter.note)
        requirements_text = requirements_file.read_text() if requirements_file else None
        key = environment_key(interpreter, requirements_text)
        # pip expands ${VAR} in requirements files from its environment (contract §8)
        pip_env = {**variables,
                   **{k: v for k, v in os.environ.items()
                      if k in ("PATH", "HOME", "LANG", "TMPDIR", "PIP_INDEX_URL",
                               "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE")}}
        await self.environments.ensure(key, interpreter, requirements_file, pip_env, note)
        return key

    async def _record_progress(self, step_id: str, build_log: BuildLog) -> None:
        """The log so far, readable while the build runs (GET /steps/<name>/logs)."""
        async with self.transactions() as session:
            step = await StepRepository(session).get(step_id)
            if step is not None and step.status == "creation_pending":
                step.build_log = redact(build_log.text())

    async def _record(self, step_id: str, status: str, reason: str | None,
                      commit_id: str | None, key: str | None, lines: list[str],
                      warnings: list[str], image: str | None = None) -> None:
        async with self.transactions() as session:
            step = await StepRepository(session).get(step_id)
            if step is None:
                return
            step.status = status
            step.status_reason = redact(reason) if reason else None
            step.build_log = redact("\n".join(lines))
            step.commit_id = commit_id or step.commit_id
            step.environment_key = key
            step.image = image
            # warnings given at creation (a substituted language) stay, once each
            earlier = step.container_config.get("warnings") or []
            step.container_config = {**step.container_config,
                                     "warnings": list(dict.fromkeys([*earlier, *warnings]))}
            step.updated_at = utcnow()

    async def _prepare_code(self, plan: BuildPlan, deploy_key: str | None,
                            note: Callable[[str], None]) -> str | None:
        code = self.code_dir(plan.step_id)
        shutil.rmtree(code, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="gristmill-step-") as scratch:
            archive = Path(scratch) / "code.tgz"
            if plan.origin == "local":
                async with self.transactions() as session:
                    await self.datastore(session).download_to(
                        archive_object_path(plan.step_id), archive)
                size = await asyncio.to_thread(extract_archive, archive, code)
                note(f"Code extracted ({size / 1024:.1f} KB)")
                return None
            assert plan.repository_url
            note(f"Cloning {redact(plan.repository_url)}"
                 + (f" (branch {plan.repository_branch})" if plan.repository_branch else ""))
            checkout = await clone(plan.repository_url, plan.repository_branch, deploy_key,
                                   Path(scratch) / "checkout")
            note(f"Checked out commit {checkout.commit_id}")
            extras = [p for p in (plan.requirements_path, plan.function_path,
                                  plan.dockerfile_path) if p]
            size = await asyncio.to_thread(select_included, checkout.path, code,
                                           plan.included_folders, extras)
            note(f"Code selected ({size / 1024:.1f} KB)")
            await asyncio.to_thread(_make_archive, code, archive)
            async with self.transactions() as session:
                await self.datastore(session).upload_from(
                    archive, archive_object_path(plan.step_id))
            return checkout.commit_id


def _make_archive(folder: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname="")


def _image_request(plan: BuildPlan) -> ImageRequest:
    return ImageRequest(
        step_name=plan.step_name, language=plan.language,
        requirements_path=plan.requirements_path,
        system_dependencies=tuple(plan.system_dependencies),
        dockerfile_path=plan.dockerfile_path,
    )
