"""Follows the step image builds (BuildKit Jobs) of this control service through watches.

A build used to be polled on its own: a GET of its Job and a list of its pods every few
seconds, per build. Here every build of a namespace is followed by ONE list and watch of
the build Jobs and ONE of the build pods (``build_status.BUILDS``), shared by all the
builds that run, however many: the same ``PodInformer`` as the elastic pods' (resume from
the last resourceVersion, list again on 410 Gone, back off after errors). A build is
judged from that cache (``build_status.build_outcome``, pure); the only requests left
per build are reads of its pod's log, and only while a container of that pod runs
(plus one at the end), capped at ``log_cap_bytes``.

The watches run only while at least one build is followed: the first ``follow`` starts
them, the last ``unfollow`` stops them (a control service that builds nothing watches
nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from kr8s.asyncio.objects import Job, Pod

from gristmill_platform.executors.kubernetes import build_status
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.kubernetes.watcher import PodInformer
from gristmill_platform.executors.spec import Handle, PollResult
from gristmill_platform.timeouts import within


class BuildWatcher:
    """The Jobs and pods of the builds this process follows, from two shared watches."""

    def __init__(self, executor: KubernetesExecutor) -> None:
        self.executor = executor
        self.namespace = executor.cfg.builds_namespace
        self.jobs = PodInformer(executor, self.namespace, build_status.BUILDS,
                                self._job_changed, kind=Job)
        self.pods = PodInformer(executor, self.namespace, build_status.BUILDS,
                                self._pod_changed, kind=Pod)
        # job name -> (its handles' count, woken at each change of the Job or its pods)
        self._followed: dict[str, tuple[int, asyncio.Event]] = {}
        # job name -> (the Jobs list count when followed, when)
        self._since: dict[str, tuple[int, float]] = {}
        self._running = False

    def follow(self, handle: Handle) -> None:
        name = str(handle["name"])
        count, event = self._followed.get(name, (0, asyncio.Event()))
        self._followed[name] = (count + 1, event)
        self._since.setdefault(name, (self.jobs.list_starts, time.monotonic()))
        if not self._running:
            self._running = True
            self.jobs.start()
            self.pods.start()

    async def unfollow(self, handle: Handle) -> None:
        name = str(handle["name"])
        count, event = self._followed.get(name, (1, asyncio.Event()))
        if count > 1:
            self._followed[name] = (count - 1, event)
            return
        self._followed.pop(name, None)
        self._since.pop(name, None)
        if not self._followed and self._running:
            self._running = False
            await self.jobs.stop()
            await self.pods.stop()
            self.jobs.synced.clear()  # the caches are stale from here on
            self.pods.synced.clear()
            if self._followed:  # a build was followed while the watches stopped
                self._running = True
                self.jobs.start()
                self.pods.start()

    def synced(self) -> bool:
        return self.jobs.synced.is_set() and self.pods.synced.is_set()

    async def wait(self, handle: Handle, timeout_s: float) -> None:
        """Until the build's Job or one of its pods changes, or ``timeout_s`` passed."""
        entry = self._followed.get(str(handle["name"]))
        if entry is None:
            return
        event = entry[1]
        with contextlib.suppress(TimeoutError):
            await within(event.wait(), timeout_s)
        event.clear()

    def job(self, handle: Handle) -> Mapping[str, Any] | None:
        return self.jobs.pods.get(str(handle["name"]))

    def pod(self, handle: Handle) -> Mapping[str, Any] | None:
        """The build's newest pod in the cache (owned by the Job's uid when known)."""
        job = self.job(handle)
        uid = ((job or {}).get("metadata") or {}).get("uid") or handle.get("uid")
        return build_status.newest_build_pod(self.pods.pods.values(), str(handle["name"]),
                                             str(uid) if uid else None)

    def outcome(self, handle: Handle) -> PollResult | None:
        """What the caches say of the build, or None when they cannot tell yet (not
        listed yet, or the Job not seen yet: the caller asks for it by name when that
        lasts, ``unseen_for``)."""
        if not self.synced():
            return None
        job = self.job(handle)
        if job is None:
            listed_at, _ = self._since.get(str(handle["name"]), (self.jobs.lists, 0.0))
            # created before it was followed, so a list begun since would show it: gone.
            # Until then the watch's event of its creation may still be on its way.
            if self.jobs.lists <= listed_at:
                return None
        return build_status.build_outcome(
            job, self.pod(handle), now=self.executor.now(),
            build_timeout_s=self.executor.cfg.build_timeout_s,
            unschedulable_timeout_s=self.executor.cfg.unschedulable_timeout_s)

    def unseen_for(self, handle: Handle) -> float:
        """How long the build has been followed without its Job in the cache."""
        if self.job(handle) is not None:
            return 0.0
        _, since = self._since.get(str(handle["name"]), (0, time.monotonic()))
        return time.monotonic() - since

    def _job_changed(self, name: str) -> None:
        self._wake(name)

    def _pod_changed(self, name: str) -> None:
        raw = self.pods.pods.get(name)
        if raw is not None:
            self._wake(str(((raw.get("metadata") or {}).get("labels") or {}).get(
                build_status.JOB_NAME_LABEL) or ""))
            return
        for job_name in self._followed:  # deleted: whoever may have had it looks again
            self._wake(job_name)

    def _wake(self, job_name: str) -> None:
        entry = self._followed.get(job_name)
        if entry is not None:
            entry[1].set()
