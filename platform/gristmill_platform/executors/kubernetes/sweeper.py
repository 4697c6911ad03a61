"""The orphan sweeper: deletes the execution pods (and Jobs) no live execution accounts for.

A pod outlives its execution when the control service stopped between recording the end
and deleting the pod, when an execution was deleted while its pod was being created, or
when a create that timed out did reach the server and nobody followed the pod it made. The
pod watcher only knows the pods it follows, so at start-up and every ``sweep_interval_s``
the sweeper lists every ``app.kubernetes.io/managed-by=gristmill`` elastic pod and Job of
the namespace, asks the database which of their executions are live (pending or running),
and deletes the others once they have been orphans for ``sweep_grace_s``: since this
sweeper first found them so, or since their container finished. The grace leaves the
watcher (of this replica or another) time to keep the logs and clean up as usual.

Pods are deleted through the executor's cleanup, so the log lines the runner could not
send are still kept for an execution that exists. Warm workers of low-latency deployments
(another mode; their Deployment owns them) are never touched, nor build Jobs, nor anything
without an execution annotation.

Every control-service replica runs its own sweeper, and that is safe by construction: what
decides is the database all replicas share (is the execution pending or running?), never
what one replica follows in memory, so a replica never deletes the pod of a live execution
another replica launched. The one thing two sweepers (or a sweeper and a watcher) could do
together is clean the same pod at once, each keeping its unsent log lines (twice): the
executor's cleanup claims the pod first (``KubernetesExecutor.cleanup_claimed``: an
annotation patched with the resourceVersion just read, 409 Conflict for the loser), and a
pod listed with a fresh claim of another replica is not even tried. No Lease is needed:
there is nothing to elect, only one write to win, and N replicas cost N lists every
``sweep_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kr8s.asyncio.objects import Job, Pod

from gristmill_platform.executors.kubernetes import manifests
from gristmill_platform.executors.kubernetes.executor import (
    ANNOTATION_CLEANING,
    BACKEND,
    KubernetesExecutor,
    claim_is_fresh,
    parse_claim,
)

log = logging.getLogger("gristmill.executors.kubernetes.sweeper")

# ids -> those of live (pending or running) executions
LiveExecutions = Callable[[Sequence[str]], Awaitable[set[str]]]


@dataclass(frozen=True)
class Orphan:
    kind: str  # "Pod" or "Job"
    namespace: str
    name: str
    execution_id: str
    finished_at: datetime | None
    cleaned_by: tuple[str, datetime] | None = None  # a cleanup claim already on it


def candidate(kind: str, raw: Mapping[str, Any]) -> Orphan | None:
    """The execution object ``raw`` is, if the sweeper may consider it at all (pure)."""
    metadata = raw.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    execution_id = annotations.get(manifests.ANNOTATION_EXECUTION)
    if (
        labels.get(manifests.LABEL_MANAGED_BY) != "gristmill"
        or labels.get(manifests.LABEL_MODE) != manifests.MODE_ELASTIC
        or not execution_id
        or metadata.get("deletionTimestamp")
        # a pod some controller owns (a warm worker's ReplicaSet) is that controller's
        or any(owner.get("kind") != "Job" for owner in metadata.get("ownerReferences") or [])
    ):
        return None
    return Orphan(kind, str(metadata.get("namespace") or ""), str(metadata["name"]),
                  str(execution_id), _finished_at(raw),
                  parse_claim(annotations.get(ANNOTATION_CLEANING)))


def claimed_by_another(orphan: Orphan, replica: str, now: datetime, grace_s: float) -> bool:
    """Whether another replica claimed the orphan's cleanup recently enough to be still
    doing it (pure); a claim older than the grace is of a replica that died meanwhile."""
    return orphan.cleaned_by is not None and orphan.cleaned_by[0] != replica \
        and claim_is_fresh(orphan.cleaned_by, now, grace_s)


def due(orphan: Orphan, first_seen: datetime, now: datetime, grace_s: float) -> bool:
    """Whether an orphan found at ``first_seen`` may be deleted at ``now`` (pure)."""
    grace = timedelta(seconds=grace_s)
    if now - first_seen >= grace:
        return True
    return orphan.finished_at is not None and now - orphan.finished_at >= grace


class OrphanSweeper:
    def __init__(
        self,
        executor: KubernetesExecutor,
        live: LiveExecutions,
        followed: Callable[[], Collection[str]] = tuple,
    ) -> None:
        self.executor = executor
        self.live = live
        self.followed = followed
        self.interval_s = executor.cfg.sweep_interval_s
        self.grace_s = executor.cfg.sweep_grace_s
        self._first_seen: dict[tuple[str, str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> list[str]:
        """One pass: the names of the objects deleted (``Pod/name``, ``Job/name``)."""
        namespace = self.executor.cfg.namespace
        selector = manifests.execution_pods_selector()
        found: list[Orphan] = []
        for kind in (Pod, Job):
            items, _ = await self.executor.list_objects(kind, namespace, selector)
            found += [c for c in (candidate(kind.kind, item) for item in items) if c]
        live = await self.live([orphan.execution_id for orphan in found]) if found else set()
        followed = set(self.followed())
        now = self.executor.now()
        removed: list[str] = []
        current: set[tuple[str, str, str]] = set()
        for orphan in found:
            key = (orphan.kind, orphan.namespace, orphan.name)
            if orphan.execution_id in live or orphan.execution_id in followed:
                continue
            current.add(key)
            first_seen = self._first_seen.setdefault(key, now)
            if not due(orphan, first_seen, now, self.grace_s) or \
                    claimed_by_another(orphan, self.executor.replica, now, self.grace_s):
                continue
            try:
                if not await self._remove(orphan):
                    log.info("orphan sweeper: %s %s is being cleaned up by another replica",
                             orphan.kind, orphan.name)
                    continue
            except Exception:
                log.warning("could not delete the orphaned %s %s; next sweep",
                            orphan.kind, orphan.name, exc_info=True)
                continue
            current.discard(key)
            removed.append(f"{orphan.kind}/{orphan.name}")
            log.info("orphan sweeper: deleted %s %s of execution %s, not live for %d s or "
                     "more", orphan.kind, orphan.name, orphan.execution_id, self.grace_s)
        # forget what is gone or live again, so that the table stays the size of the orphans
        self._first_seen = {key: seen for key, seen in self._first_seen.items()
                            if key in current}
        return removed

    async def _remove(self, orphan: Orphan) -> bool:
        """Clean the orphan up; False when another replica claimed it first."""
        if orphan.kind == "Pod":
            # claimed, the log sink (lines the runner could not send), then the delete
            return await self.executor.cleanup_claimed({
                "backend": BACKEND, "kind": "Pod", "namespace": orphan.namespace,
                "name": orphan.name, "execution_id": orphan.execution_id,
            })
        # a Job has no log to keep: deleting it twice is harmless (404 is fine)
        await self.executor.delete_object(Job, orphan.namespace, orphan.name)
        return True

    def start(self) -> None:
        if self.interval_s and self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        while True:  # at start-up, then every interval
            try:
                await self.sweep()
            except Exception:
                log.warning("the orphan sweep failed; next one in %.0f s", self.interval_s,
                            exc_info=True)
            await asyncio.sleep(self.interval_s)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _finished_at(raw: Mapping[str, Any]) -> datetime | None:
    status = raw.get("status") or {}
    times = [
        ((container.get("state") or {}).get("terminated") or {}).get("finishedAt")
        for container in status.get("containerStatuses") or []
    ]
    times += [condition.get("lastTransitionTime") for condition in status.get("conditions")
              or [] if condition.get("type") in ("Complete", "Failed")]
    parsed = [_parse(value) for value in times if isinstance(value, str)]
    found = [value for value in parsed if value is not None]
    return max(found) if found else None


def _parse(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
