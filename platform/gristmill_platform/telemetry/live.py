"""Gauges read at scrape time from the components that know them: nothing is kept up to
date between scrapes. Each app has its own set (tests build several apps per process)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("gristmill.telemetry")

# label values -> value; () for a gauge without labels
Reading = Mapping[tuple[str, ...], float]


@dataclass(frozen=True)
class LiveGauge:
    name: str
    documentation: str
    labels: Sequence[str]


ELASTIC_QUEUE_DEPTH = LiveGauge(
    "gristmill_elastic_queue_depth",
    "Elastic executions created and not yet started by a worker.", ())
WARM_WORKERS = LiveGauge(
    "gristmill_warm_workers",
    "Warm workers of low-latency deployments, by deployment and state.",
    ("deployment", "state"))
JOURNAL_BACKLOG = LiveGauge(
    "gristmill_journal_backlog",
    "Low-latency executions answered but not yet written to the database.", ())
EXECUTIONS_RUNNING = LiveGauge(
    "gristmill_executions_running",
    "Executions running in the whole environment, by mode (counted in the database: every "
    "replica reports the same value).", ("mode",))
SHADOW_COPIES_UNENDED = LiveGauge(
    "gristmill_shadow_copies_unended",
    "Shadow copies of low-latency calls not yet ended: waiting for a pause of the calls, "
    "handed to the shadow runner, or running (docs/rollout.md#shadow-runner).", ())
SCHEDULER_OVERDUE = LiveGauge(
    "gristmill_scheduler_overdue_seconds",
    "How long the most overdue periodic deployment has been waiting past its scheduled "
    "time (0 when none is late).", ())

DATA_DIR_FREE = LiveGauge(
    "gristmill_data_dir_free_bytes",
    "Free bytes on the filesystem of the data directory (database, blobs, environments).",
    ())
DATA_DIR_SIZE = LiveGauge(
    "gristmill_data_dir_size_bytes", "Size of the filesystem of the data directory.", ())

ALL = (ELASTIC_QUEUE_DEPTH, WARM_WORKERS, JOURNAL_BACKLOG, SHADOW_COPIES_UNENDED,
       EXECUTIONS_RUNNING, SCHEDULER_OVERDUE, DATA_DIR_FREE, DATA_DIR_SIZE)


class LiveGauges(Collector):
    def __init__(self) -> None:
        self._readers: dict[str, Callable[[], Reading]] = {}

    def provide(self, gauge: LiveGauge, reader: Callable[[], Reading]) -> None:
        self._readers[gauge.name] = reader

    def describe(self) -> Iterator[Metric]:
        for gauge in ALL:
            yield GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)

    def collect(self) -> Iterator[Metric]:
        for gauge in ALL:
            family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
            reader = self._readers.get(gauge.name)
            if reader is not None:
                try:
                    reading = reader()
                except Exception:
                    # a scrape must not fail because one component is shutting down
                    log.warning("could not read %s", gauge.name, exc_info=True)
                    reading = {}
                for labels, value in reading.items():
                    family.add_metric(list(labels), value)
            yield family
