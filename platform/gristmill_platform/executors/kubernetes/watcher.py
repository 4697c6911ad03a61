"""Follows the pods of elastic executions until they end and are cleaned up.

A local worker is a child process: the local executor learns at once when it exits. A pod
says nothing by itself, so the control service watches the pods it launched: ONE list and
watch per namespace and label selector (``manifests.execution_pods_selector``), shared by
every followed pod, however many (a ``PodInformer``). The informer lists the pods, then
watches from the list's resourceVersion; when the server ends the watch it resumes from
the last resourceVersion it saw; on 410 Gone (that version was compacted away) it lists
again; on any other error it backs off (exponential, jittered) and lists again. Its cache
of pods is what the watcher judges (``status.pod_outcome``, pure): no per-pod GET while
pods run, whether there are ten or ten thousand.

Each event marks the pods it concerns, which are judged at once; every ``interval_s`` all
followed pods are judged again from the cache (an unschedulable pod fails after a while,
with no event to say so). An ended pod is handed to ``on_end``, which records the outcome
and cleans the pod up; it stays followed until ``on_end`` returns True, so a failed
cleanup (the API or the database unreachable) is tried again on the next pass.

A followed pod the informer has never seen (created, then deleted before any list or
event showed it) is asked for by name, once per ``UNSEEN_RECHECK_S``: the only GET left,
and not one of steady state.

Only the pods this process launched (or adopted at start, or was asked to stop) are
followed; the reconciler covers executions whose control service went away, and the
orphan sweeper (sweeper.py) the pods no execution accounts for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kr8s
from kr8s.asyncio.objects import APIObject, Pod

from gristmill_platform.executors.kubernetes import manifests, status
from gristmill_platform.executors.kubernetes.executor import KubernetesExecutor
from gristmill_platform.executors.spec import Handle, PollResult, WorkerState
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.executors.kubernetes")

# on_end(execution_id, handle, outcome) -> True once the pod is cleaned up
EndHook = Callable[[str, Handle, PollResult], Awaitable[bool]]
ENDED = (WorkerState.SUCCEEDED, WorkerState.FAILED)
# After this many failed attempts at handling one ended pod, it is left alone (and said
# so), rather than retried every tick forever.
MAX_ATTEMPTS = 30
# A followed pod the informer has not seen after this long is asked for by name.
UNSEEN_RECHECK_S = 30.0
# Backoff of the informer after a failed list or watch: base * 2**failures, jittered.
RELIST_BACKOFF_S = 0.5
RELIST_BACKOFF_MAX_S = 30.0


def relist_delay(failures: int, draw: Callable[[], float] = random.random) -> float:
    """How long the informer waits before listing again after ``failures`` failures in a
    row (pure): full jitter over an exponential bound."""
    return float(draw() * min(RELIST_BACKOFF_MAX_S, RELIST_BACKOFF_S * 2 ** max(failures - 1, 0)))


class WatchExpired(Exception):
    """410 Gone: the resourceVersion the watch resumed from was compacted away."""


class PodInformer:
    """One list + watch of the pods (or, with ``kind``, other objects: build Jobs) of a
    namespace matching a label selector, and their latest state (``pods``, by name).
    ``on_change(name)`` is called for each change."""

    def __init__(
        self,
        executor: KubernetesExecutor,
        namespace: str,
        selector: Mapping[str, str],
        on_change: Callable[[str], None],
        kind: type[APIObject] = Pod,
    ) -> None:
        self.executor = executor
        self.kind = kind
        self.namespace = namespace
        self.selector = dict(selector)
        self.on_change = on_change
        self.pods: dict[str, dict[str, Any]] = {}
        # Lists are numbered as they begin; ``lists`` is the number of the last one that
        # completed. A followed pod absent from a list begun after it was followed is gone.
        self.list_starts = 0
        self.lists = 0
        self.watches = 0  # watches opened, for the logs and the tests
        self.failures = 0  # failed lists or watches in a row (410 Gone is not one)
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._list()
                failures = self.failures = 0
                while True:  # resume from the last version until it expires
                    await self._watch()
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("the watch of %s in %s expired (410 Gone); listing again",
                         self.kind.endpoint, self.namespace)
            except Exception as error:
                failures += 1
                self.failures = failures
                delay = relist_delay(failures)
                log.warning("the watch of %s in %s failed (%s); listing again in %.1f s",
                            self.kind.endpoint, self.namespace, _describe(error), delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        self.list_starts += 1
        number = self.list_starts
        items, version = await self.executor.list_objects(
            self.kind, self.namespace, self.selector)
        fresh = {item["metadata"]["name"]: item for item in items}
        changed = [name for name in self.pods if name not in fresh]  # deleted meanwhile
        changed += [
            name for name, item in fresh.items()
            if _version(self.pods.get(name)) != _version(item)
        ]
        self.pods = fresh
        self.resource_version = version
        self.lists = number
        self.synced.set()
        for name in changed:
            self.on_change(name)

    async def _watch(self) -> None:
        self.watches += 1
        events = self.executor.watch_objects(
            self.kind, self.namespace, self.selector, self.resource_version
        )
        try:
            # closed at once when an event ends the watch (410): no stream left open
            async with contextlib.aclosing(events):
                async for event in events:
                    self._apply(event)
        except kr8s.ServerError as error:
            if error.response is not None and error.response.status_code == 410:
                raise WatchExpired() from error
            raise

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        metadata = obj.get("metadata") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired()
            raise RuntimeError(f"watch error: {obj.get('code')} {obj.get('message')}")
        if metadata.get("resourceVersion"):
            self.resource_version = str(metadata["resourceVersion"])
        if kind == "BOOKMARK":
            return
        name = metadata.get("name")
        labels = metadata.get("labels") or {}
        if not name or any(labels.get(k) != v for k, v in self.selector.items()):
            return  # the selector is checked here too, whatever the server does with it
        if kind == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = dict(obj)
        self.on_change(name)


class PodWatcher:
    def __init__(self, executor: KubernetesExecutor, on_end: EndHook, interval_s: float) -> None:
        self.executor = executor
        self.on_end = on_end
        self.interval_s = interval_s
        self.selector = manifests.execution_pods_selector()
        self.informers: dict[str, PodInformer] = {}
        self._handles: dict[str, Handle] = {}
        self._by_pod: dict[tuple[str, str], str] = {}
        self._attempts: dict[str, int] = {}
        # execution id -> (the informer's list count when followed, when; seen since)
        self._followed: dict[str, tuple[int, float]] = {}
        self._seen: set[str] = set()
        self._asked: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self.passes = 0  # full passes done, for the tests

    def follow(self, handle: Handle) -> None:
        execution_id = str(handle["execution_id"])
        namespace = str(handle["namespace"])
        self._handles[execution_id] = handle
        self._by_pod[namespace, str(handle["name"])] = execution_id
        informer = self._informer(namespace)
        self._followed.setdefault(execution_id, (informer.list_starts, time.monotonic()))
        self._dirty.add(execution_id)
        self._wake.set()

    def following(self) -> list[str]:
        return sorted(self._handles)

    def outcome(self, handle: Handle) -> PollResult | None:
        """What the cache says of a followed pod's execution, or None when it cannot
        tell yet (no list done, or the pod not seen yet)."""
        informer = self.informers.get(str(handle["namespace"]))
        execution_id = str(handle["execution_id"])
        if informer is None or not informer.synced.is_set():
            return None
        pod = informer.pods.get(str(handle["name"]))
        if pod is not None:
            if execution_id in self._handles:
                self._seen.add(execution_id)
            return status.pod_outcome(
                pod,
                now=self.executor.now(),
                unschedulable_timeout_s=self.executor.cfg.unschedulable_timeout_s,
            )
        listed_at, _ = self._followed.get(execution_id, (informer.lists, 0.0))
        if execution_id in self._seen or informer.lists > listed_at:
            return status.missing_pod_outcome()  # deleted, or absent from a later list
        return None

    def _informer(self, namespace: str) -> PodInformer:
        informer = self.informers.get(namespace)
        if informer is None:
            informer = self.informers[namespace] = PodInformer(
                self.executor, namespace, self.selector, functools.partial(self._changed, namespace)
            )
            if self._running:
                informer.start()
        return informer

    def _changed(self, namespace: str, name: str) -> None:
        execution_id = self._by_pod.get((namespace, name))
        if execution_id is not None:
            if name in self.informers[namespace].pods:
                self._seen.add(execution_id)
            self._dirty.add(execution_id)
            self._wake.set()

    async def check(self, only_changed: bool = False) -> None:
        """One pass over the followed pods (or only those an event concerned), judged
        from the informers' caches."""
        ids = set(self._dirty) if only_changed else set(self._handles)
        self._dirty -= ids
        if not only_changed:
            self.passes += 1
        for execution_id in sorted(ids):
            handle = self._handles.get(execution_id)
            if handle is None:
                continue
            outcome = self.outcome(handle)
            if outcome is None:
                outcome = await self._ask(execution_id, handle)
                if outcome is None:
                    continue
            if outcome.state not in ENDED:
                continue
            try:
                done = await self.on_end(execution_id, handle, outcome)
            except Exception:
                log.exception("could not record the end of the pod of %s", execution_id)
                done = False
            if done:
                self._forget(execution_id)
                continue
            attempts = self._attempts[execution_id] = self._attempts.get(execution_id, 0) + 1
            if attempts >= MAX_ATTEMPTS:
                log.error("giving up on the pod %s of execution %s after %d attempts; delete "
                          "it by hand", handle.get("name"), execution_id, attempts)
                self._forget(execution_id)

    async def _ask(self, execution_id: str, handle: Handle) -> PollResult | None:
        """A pod the informer has not shown after UNSEEN_RECHECK_S: asked for by name."""
        _, since = self._followed.get(execution_id, (0, time.monotonic()))
        now = time.monotonic()
        if now - max(since, self._asked.get(execution_id, since)) < UNSEEN_RECHECK_S:
            return None
        self._asked[execution_id] = now
        try:
            return await self.executor.poll(handle)
        except Exception:  # the API is unreachable: the pod is still there to ask
            log.warning("could not read the pod of %s", execution_id, exc_info=True)
            return None

    def _forget(self, execution_id: str) -> None:
        handle = self._handles.pop(execution_id, None)
        if handle is not None:
            self._by_pod.pop((str(handle["namespace"]), str(handle["name"])), None)
        self._attempts.pop(execution_id, None)
        self._followed.pop(execution_id, None)
        self._asked.pop(execution_id, None)
        self._seen.discard(execution_id)
        self._dirty.discard(execution_id)

    def start(self) -> None:
        self._running = True
        for informer in self.informers.values():
            informer.start()
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def _forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            try:
                full = loop.time() >= next_full
                await self.check(only_changed=not full)
                if full:
                    next_full = loop.time() + self.interval_s
            except Exception:
                log.exception("the pod watcher's pass failed")
            self._wake.clear()
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    await within(self._wake.wait(),
                                           max(next_full - loop.time(), 0.0))

    async def shutdown(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for informer in self.informers.values():
            await informer.stop()


def _version(pod: Mapping[str, Any] | None) -> str | None:
    if pod is None:
        return None
    return str((pod.get("metadata") or {}).get("resourceVersion"))


def _describe(error: BaseException) -> str:
    if isinstance(error, kr8s.ServerError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    return f"{type(error).__name__}: {error}"
