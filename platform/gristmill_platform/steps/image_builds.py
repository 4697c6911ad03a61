"""Step images on the Kubernetes backend: built in the cluster when a step is created.

From the step's prepared code the control service makes the build context (the code,
plus a generated Dockerfile unless the step brings its own), names the image after the
digest of everything that goes into it, and then:

1. reuses the image when a ready step already has it (identical steps: no build at all);
2. otherwise uploads the context to the data store (S3, where the build Job fetches it) and
   submits the BuildKit Job named after the digest. Identical steps created while it runs
   join the same Job, so they share one build;
3. follows the Job until it is over, copying the build's log into the step's build log.
   Every build of this control service is followed by one shared watch of the build
   Jobs and one of their pods (executors/kubernetes/build_watch.py), not by requests per
   build; the only ones left per build read its pod's log, every ``poll_interval_s``
   while a container of that pod runs and once at the end, at most its last
   ``log_cap_bytes`` (GRISTMILL_KUBERNETES_LOG_CAP_BYTES), after a line saying what was
   cut.

The registry itself is not asked whether the image exists: the control service has no
registry credentials (only the builder pushes). A finished Job stays a day
(``build_ttl_s``) and is joined too; after that a rebuild is cheap thanks to BuildKit's
layer cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from gristmill_platform.db.models.steps import Step
from gristmill_platform.executors.kubernetes.build_status import container_running, log_container
from gristmill_platform.executors.kubernetes.config import KubernetesConfig, kubernetes_config
from gristmill_platform.executors.kubernetes.images import (
    ImageBuild,
    base_image,
    step_dockerfile,
    step_image_digest,
    step_image_ref,
)
from gristmill_platform.executors.spec import Handle, PollResult, WorkerState
from gristmill_platform.settings import Settings
from gristmill_platform.steps.build_failures import build_failure_reason
from gristmill_platform.steps.build_log import BuildLog
from gristmill_platform.steps.image_context import CODE_DIR, GENERATED_DOCKERFILE, pack_context

if TYPE_CHECKING:
    from gristmill_platform.datastore.backend import DataStoreBackend, DataStoreFor
    from gristmill_platform.db.transactions import Transactions
    from gristmill_platform.executors.kubernetes.build_watch import BuildWatcher
    from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor

log = logging.getLogger("gristmill.steps")

POLL_INTERVAL_S = 5.0  # how often a running build's log is read
# Consecutive failed calls to the Kubernetes API (log reads, or the build watch's lists)
# before a build is given up.
MAX_API_FAILURES = 12
# A build whose Job the watch has not shown after this long is asked for by name.
UNSEEN_RECHECK_S = 30.0
# Past the Job's own deadline and the wait for a node, the Job controller should have
# failed it already; this only guards against a Job nobody ever updates.
DEADLINE_GRACE_S = 600

Progress = Callable[[], Awaitable[None]]


class ImageBuildError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KubernetesSetupError(RuntimeError):
    """The settings cannot work with the Kubernetes backend; raised at start-up."""


@dataclass(frozen=True)
class ImageRequest:
    step_name: str
    language: str
    requirements_path: str | None
    system_dependencies: tuple[str, ...]
    dockerfile_path: str | None


def context_object_path(digest: str) -> str:
    return f".gristmill/builds/{digest}.tar.gz"


def check_settings(settings: Settings) -> None:
    """Refuse, at start-up, what cannot build step images in a cluster."""
    if settings.datastore_backend != "s3":
        raise KubernetesSetupError(
            "GRISTMILL_EXECUTOR=kubernetes needs GRISTMILL_DATASTORE_BACKEND=s3: step images "
            "are built inside the cluster, by a BuildKit Job that reads the step's code from "
            "the data store's bucket, and a local data store (a folder on this machine) "
            "cannot be reached from the cluster.")


def builder_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Where the build's context fetcher finds the bucket: AWS needs the region; MinIO and
    other S3-compatible stores also need their endpoint and, usually, path-style addressing."""
    env: list[tuple[str, str]] = []
    if settings.s3_region:
        env.append(("AWS_REGION", settings.s3_region))
    if settings.s3_endpoint_url:
        env.append(("S3_ENDPOINT", settings.s3_endpoint_url))
        path_style = settings.s3_addressing_style != "virtual"
        env.append(("S3_FORCE_PATH_STYLE", "true" if path_style else "false"))
    return tuple(env)


def context_url(store: DataStoreBackend, path: str) -> str:
    """The ``s3://bucket/key`` the build fetches its context from."""
    from gristmill_platform.datastore.s3 import S3DataStore

    if not isinstance(store, S3DataStore):
        raise KubernetesSetupError("Step images need the S3 data store (see check_settings)")
    return f"s3://{store.bucket}/{store.key(path)}"


def shown_name(step_name: str) -> str:
    # a pipeline created from a function owns a hidden step named "pipeline:<name>"
    if step_name.startswith("pipeline:"):
        return f"pipeline {step_name.removeprefix('pipeline:')!r}"
    return f"step {step_name!r}"


class StepImages:
    """Builds step images with a ``KubernetesExecutor`` (see the module docstring)."""

    def __init__(
        self,
        transactions: Transactions,
        datastore: DataStoreFor,
        cfg: KubernetesConfig,
        executor: KubernetesExecutor,
        *,
        builder_env: tuple[tuple[str, str], ...] = (),
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.transactions = transactions
        self.datastore = datastore
        self.cfg = cfg
        self.executor = executor
        self.builder_env = builder_env
        self.poll_interval_s = poll_interval_s
        self._watcher: BuildWatcher | None = None

    @property
    def watcher(self) -> BuildWatcher:
        """The shared watch of every build this service follows (made at first use)."""
        if self._watcher is None:
            from gristmill_platform.executors.kubernetes.build_watch import BuildWatcher

            self._watcher = BuildWatcher(self.executor)
        return self._watcher

    @classmethod
    def from_settings(cls, settings: Settings, transactions: Transactions,
                      datastore: DataStoreFor) -> StepImages:
        # imported here: an embedded environment never loads the Kubernetes client
        from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor

        check_settings(settings)
        cfg = kubernetes_config(settings)
        return cls(transactions, datastore, cfg, KubernetesExecutor(cfg),
                   builder_env=builder_env(settings), poll_interval_s=POLL_INTERVAL_S)

    async def build(self, request: ImageRequest, code: Path, build_log: BuildLog,
                    progress: Progress, *, resumed: bool) -> str:
        """Make sure the step's image exists; return its reference.

        Raises ImageBuildError with the reason a user understands when it cannot."""
        base = base_image(request.language, self.cfg)
        if request.dockerfile_path:
            generated, dockerfile = None, request.dockerfile_path
            build_log.note(f"Building the step's own Dockerfile {dockerfile} "
                           f"(BASE_IMAGE={base})")
        else:
            try:
                generated = step_dockerfile(request.system_dependencies,
                                            request.requirements_path, code_dir=CODE_DIR)
            except ValueError as exc:
                raise ImageBuildError(str(exc)) from None
            dockerfile = GENERATED_DOCKERFILE
            build_log.note(f"Building on the runtime image {base}")
        with tempfile.TemporaryDirectory(prefix="gristmill-context-") as scratch:
            archive = Path(scratch) / "context.tar.gz"
            context_digest = await asyncio.to_thread(pack_context, code, archive, generated)
            digest = step_image_digest(base, dockerfile, context_digest)
            image = step_image_ref(self.cfg, digest)
            build_log.note(f"Step image {image}")
            owner = await self._ready_step_with(image)
            if owner is not None:
                build_log.note(f"Reusing the image of the {shown_name(owner)} (same base, "
                               "Dockerfile and code): nothing to build")
                return image
            path = context_object_path(digest)
            async with self._datastore() as store:
                await store.upload_from(archive, path)
                url = context_url(store, path)
        build = ImageBuild(step_name=request.step_name, language=request.language,
                           context_url=url, digest=digest, dockerfile=dockerfile,
                           env=self.builder_env)
        try:
            handle = await self.executor.submit_build(build, replace_failed=not resumed)
        except Exception as exc:  # the API refused or did not answer: say so
            log.warning("build submission for %s failed", request.step_name, exc_info=True)
            raise ImageBuildError(
                f"The image build could not be started in namespace {self.cfg.namespace}: "
                f"{type(exc).__name__}: {exc}") from None
        build_log.note(f"Build Job {handle['name']} in namespace {handle['namespace']}"
                       + (" (following it again after a restart)" if resumed else ""))
        await progress()
        outcome, lines = await self._follow(handle, build_log, progress)
        if outcome.state == WorkerState.SUCCEEDED:
            build_log.note(f"Image pushed: {image}")
            await self._forget_context(path)
            return image
        raise ImageBuildError(build_failure_reason(
            outcome, lines, base=base, registry=self.cfg.registry,
            own_dockerfile=generated is None))

    async def _follow(self, handle: Handle, build_log: BuildLog, progress: Progress
                      ) -> tuple[PollResult, list[str]]:
        """Follow the Job through the shared build watch until it is over; the build's log
        is copied in as it grows."""
        watcher = self.watcher
        watcher.follow(handle)
        try:
            return await self._watch(watcher, handle, build_log, progress)
        finally:
            await watcher.unfollow(handle)

    async def _watch(self, watcher: BuildWatcher, handle: Handle, build_log: BuildLog,
                     progress: Progress) -> tuple[PollResult, list[str]]:
        loop = asyncio.get_running_loop()
        deadline = (loop.time() + self.cfg.build_timeout_s + self.cfg.unschedulable_timeout_s
                    + DEADLINE_GRACE_S)
        failures = 0
        shown: list[str] = []
        waiting: str | None = None
        asked = next_log = loop.time()
        while True:
            outcome = watcher.outcome(handle)
            pod = watcher.pod(handle)
            lines: list[str] | None = None
            try:
                if outcome is None and watcher.unseen_for(handle) >= UNSEEN_RECHECK_S \
                        and loop.time() - asked >= UNSEEN_RECHECK_S:
                    # the watch has not shown the Job: asked for by name, logs as well
                    asked = loop.time()
                    outcome = await self.executor.poll_build(handle)
                    lines = [line.message for line in await self.executor.build_logs(handle)]
                elif outcome is not None:
                    if outcome.state == WorkerState.FAILED:
                        # once per failed build, read afresh: the pod's last status (why
                        # it failed) may still be on its way through the other watch
                        outcome = await self.executor.poll_build(handle)
                    ended = outcome.state in (WorkerState.SUCCEEDED, WorkerState.FAILED)
                    # read after the outcome: a finished build's log is then complete
                    if ended and pod is None:
                        lines = [line.message
                                 for line in await self.executor.build_logs(handle)]
                    elif pod is not None and (ended or (container_running(pod)
                                                        and loop.time() >= next_log)):
                        next_log = loop.time() + self.poll_interval_s
                        lines = [line.message for line in await self.executor.build_pod_logs(
                            handle["namespace"], pod["metadata"]["name"],
                            container=log_container(pod))]
            except Exception as exc:
                failures += 1
                if failures >= MAX_API_FAILURES:
                    raise ImageBuildError(
                        "The Kubernetes API stopped answering while the image was being "
                        f"built: {type(exc).__name__}: {exc}") from None
                log.warning("following build %s failed (%d)", handle["name"], failures,
                            exc_info=True)
                outcome = None
            else:
                failures = 0
            watch_failures = max(watcher.jobs.failures, watcher.pods.failures)
            if watch_failures >= MAX_API_FAILURES:
                raise ImageBuildError(
                    "The Kubernetes API stopped answering while the image was being built: "
                    f"the watch of the build failed {watch_failures} times in a row.")
            if outcome is not None:
                changed = lines is not None and lines != shown
                if lines is not None and changed:
                    build_log.attach(lines)
                    shown = lines
                if outcome.state == WorkerState.PENDING and outcome.reason != waiting:
                    waiting = outcome.reason
                    if waiting:
                        build_log.note(f"Waiting: {waiting}")
                        changed = True
                if outcome.state in (WorkerState.SUCCEEDED, WorkerState.FAILED):
                    return outcome, shown
                if changed:
                    await progress()
            if loop.time() > deadline:
                raise ImageBuildError(
                    f"The image build did not finish: its Job {handle['name']} was still not "
                    "over long after its deadline.")
            await watcher.wait(handle, self.poll_interval_s)

    async def _ready_step_with(self, image: str) -> str | None:
        async with self.transactions() as session:
            result = await session.execute(
                select(Step.name).where(Step.image == image, Step.status == "ready").limit(1))
            return result.scalar_one_or_none()

    @contextlib.asynccontextmanager
    async def _datastore(self) -> AsyncIterator[DataStoreBackend]:
        async with self.transactions() as session:
            yield self.datastore(session)

    async def _forget_context(self, path: str) -> None:
        """A built image no longer needs its context (a failed one keeps it, for a retry
        that joins or replaces the Job). Identical builds write the same object, so a
        concurrent one that still needs it rewrites it before submitting."""
        try:
            async with self._datastore() as store:
                await store.delete(path)
        except Exception:  # a leftover context only costs a few megabytes
            log.warning("could not delete build context %s", path, exc_info=True)
