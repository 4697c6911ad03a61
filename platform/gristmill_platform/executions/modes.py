"""How an execution runs: on a fresh worker of its own (elastic) or on a deployment's warm
worker (low latency), as the metrics label it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ELASTIC = "elastic"
LOW_LATENCY = "low_latency"
# The `backend` of the handle of an execution on a warm worker: who holds it sends
# heartbeats, so a quiet one has lost its control service (ExecutionRuntime.reconcile
# fails it).
LOW_LATENCY_BACKEND = "low-latency"


def mode_of(handle: Mapping[str, Any] | None) -> str:
    return LOW_LATENCY if handle and handle.get("backend") == LOW_LATENCY_BACKEND else ELASTIC
