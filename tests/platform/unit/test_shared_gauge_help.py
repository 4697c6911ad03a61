"""The HELP text of the gauges DatabaseSampler fills says what they count: the whole
environment, read from the database by every replica (docs/operations.md, "shared"), not
what the answering service runs."""

from __future__ import annotations

from pathlib import Path

from gristmill_platform.telemetry import live
from gristmill_platform.telemetry.live import LiveGauges
from gristmill_platform.telemetry.sampler import DatabaseSampler


def test_executions_running_is_documented_as_environment_wide(tmp_path: Path) -> None:
    sampler = DatabaseSampler(None, tmp_path)  # type: ignore[arg-type]  # never sampled
    gauges = LiveGauges()
    sampler.install(gauges)
    helps = {family.name: family.documentation for family in gauges.collect()}
    running = helps["gristmill_executions_running"]
    assert "environment" in running
    assert "this service" not in running
    assert running == live.EXECUTIONS_RUNNING.documentation
