"""Every metric the control service exports, defined once per process.

Counters and histograms are updated where things happen; their label children are bound
once (see ``Bound``) so the hot paths pay a dictionary lookup and an addition, not the
label resolution. Gauges whose truth lives in a component (queue depth, warm workers,
journal backlog) are read at scrape time instead (live.py), which costs nothing between
scrapes.

With several worker processes behind one port (``PROMETHEUS_MULTIPROC_DIR`` set before
start, as prometheus-client documents), values go to shared files and the exposition
merges them (exposition.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

import gristmill_platform

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (CPU, RSS, open files) and python_info of this process
REGISTRY.register(PROCESS_COLLECTOR)
REGISTRY.register(PLATFORM_COLLECTOR)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

BUILD_INFO = Gauge("gristmill_build_info", "Always 1; the running version in a label.",
                   ["version"], registry=REGISTRY, multiprocess_mode="max")
BUILD_INFO.labels(gristmill_platform.__version__).set(1)

HTTP_REQUESTS = Counter(
    "gristmill_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "gristmill_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template.",
    ["method", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY)

EXECUTIONS_STARTED = Counter(
    "gristmill_executions_started", "Executions created, by mode and trigger.",
    ["mode", "trigger"], registry=REGISTRY)
EXECUTIONS_ENDED = Counter(
    "gristmill_executions_ended", "Executions that reached a final status.",
    ["mode", "status", "trigger"], registry=REGISTRY)
QUEUE_WAIT = Histogram(
    "gristmill_elastic_queue_wait_seconds",
    "Time an elastic execution waited between its creation and its worker starting it.",
    buckets=WAIT_BUCKETS, registry=REGISTRY)
WORKER_RESTARTS = Counter(
    "gristmill_worker_restarts", "Warm workers of low-latency deployments started again "
    "after they exited or failed.", ["deployment"], registry=REGISTRY)
SHADOW_COPIES_DROPPED = Counter(
    "gristmill_shadow_copies_dropped", "Shadow copies of low-latency calls not run because "
    "too many were waiting already, or lost with a shadow runner that died (docs/rollout.md).",
    ["deployment"], registry=REGISTRY)
JOURNAL_WRITE = Histogram(
    "gristmill_journal_write_seconds",
    "Time to write one batch of the in-memory execution journal to the database.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
SQLITE_CHECKPOINT = Histogram(
    "gristmill_sqlite_checkpoint_seconds",
    "Time of one WAL checkpoint run by the control service (db/wal_checkpoints.py).",
    buckets=LATENCY_BUCKETS, registry=REGISTRY)
JOURNAL_ROWS = Counter(
    "gristmill_journal_written_executions", "Executions written by the journal.",
    registry=REGISTRY)
SCHEDULER_LAG = Gauge(
    "gristmill_scheduler_lag_seconds",
    "How late the last run of a periodic deployment started, after its scheduled time.",
    ["deployment"], registry=REGISTRY, multiprocess_mode="max")
SCHEDULER_FIRES = Counter(
    "gristmill_scheduler_fires", "Runs of periodic deployments started by the scheduler.",
    ["deployment"], registry=REGISTRY)
DATASTORE_BYTES = Counter(
    "gristmill_datastore_bytes", "Bytes the local data store received and sent (with the S3 "
    "backend, transfers go straight to S3: see the bucket's own metrics).",
    ["direction"], registry=REGISTRY)
DATASTORE_ERRORS = Counter(
    "gristmill_datastore_errors", "Data store operations that failed on the server side "
    "(disk full, I/O errors, S3 errors), not the caller's mistakes.",
    ["operation"], registry=REGISTRY)
STEP_BUILDS = Counter(
    "gristmill_step_builds", "Step builds that ended, by outcome.", ["outcome"],
    registry=REGISTRY)
STEP_BUILD_DURATION = Histogram(
    "gristmill_step_build_duration_seconds", "Duration of step builds that ended.",
    ["outcome"], buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600), registry=REGISTRY)

# counters bound to fixed labels: the common cases cost no label resolution
DATASTORE_IN = DATASTORE_BYTES.labels("in")
DATASTORE_OUT = DATASTORE_BYTES.labels("out")

K = TypeVar("K")
C = TypeVar("C")


class Bound(Generic[K, C]):
    """Label children cached by key: after the first use of a label combination, one
    dictionary lookup (prometheus-client's own ``labels()`` takes a lock and builds a
    tuple of strings each time)."""

    __slots__ = ("_children", "_make")

    def __init__(self, make: Callable[[K], C]) -> None:
        self._make = make
        self._children: dict[K, C] = {}

    def __call__(self, key: K) -> C:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._make(key)
        return child


# (method, route, status) -> counter child; (method, route) -> histogram child
http_requests: Bound[tuple[str, str, int], Counter] = Bound(
    lambda k: HTTP_REQUESTS.labels(k[0], k[1], str(k[2])))
http_duration: Bound[tuple[str, str], Histogram] = Bound(
    lambda k: HTTP_DURATION.labels(k[0], k[1]))
executions_started: Bound[tuple[str, str], Counter] = Bound(
    lambda k: EXECUTIONS_STARTED.labels(k[0], k[1]))
executions_ended: Bound[tuple[str, str, str], Counter] = Bound(
    lambda k: EXECUTIONS_ENDED.labels(k[0], k[1], k[2]))


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    http_requests((method, route, status)).inc()
    http_duration((method, route)).observe(seconds)


def execution_started(mode: str, trigger: str) -> None:
    executions_started((mode, trigger)).inc()


def execution_ended(mode: str, status: str, trigger: str) -> None:
    executions_ended((mode, status, trigger)).inc()


# The endpoint fast path (deployments/fast_path.py): its route and method never change and
# its statuses are few, so its children are bound here and found by the status alone (a
# small int: no tuple to build per request).
FAST_PATH_ROUTE = "/endpoints/{name}"
_FAST_DURATION = HTTP_DURATION.labels("POST", FAST_PATH_ROUTE)
_fast_requests = {status: HTTP_REQUESTS.labels("POST", FAST_PATH_ROUTE, str(status))
                  for status in (200, 303, 400, 401, 403, 404, 500)}


def observe_fast_path(status: int, seconds: float) -> None:
    child = _fast_requests.get(status)
    if child is None:
        child = _fast_requests[status] = HTTP_REQUESTS.labels(
            "POST", FAST_PATH_ROUTE, str(status))
    child.inc()
    _FAST_DURATION.observe(seconds)
