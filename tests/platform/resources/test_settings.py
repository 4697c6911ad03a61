"""Choosing the resource metrics backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill_platform.resources.monitor import ResourceMonitor
from gristmill_platform.resources.prometheus import PrometheusSource
from gristmill_platform.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRISTMILL_RESOURCE_METRICS_BACKEND", "GRISTMILL_METRICS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.resource_metrics_backend == "local"
    assert settings.resource_sample_interval_s == 5.0
    assert settings.resource_retention_h == 24.0
    assert settings.prometheus_url is None


@pytest.mark.parametrize("variable", ["GRISTMILL_RESOURCE_METRICS_BACKEND",
                                      "GRISTMILL_METRICS_BACKEND"])  # the infra stack's
def test_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "prometheus")
    monkeypatch.setenv("GRISTMILL_PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("GRISTMILL_RESOURCE_SAMPLE_INTERVAL_S", "2.5")
    settings = Settings()
    assert settings.resource_metrics_backend == "prometheus"
    assert settings.prometheus_url == "http://prometheus:9090"
    assert settings.resource_sample_interval_s == 2.5
    assert Settings(resource_metrics_backend="local").resource_metrics_backend == "local"


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="resource_metrics_backend"):
        Settings(resource_metrics_backend="graphite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resource_sample_interval_s"):
        Settings(resource_sample_interval_s=0)


def test_prometheus_needs_its_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, resource_metrics_backend="prometheus")
    with pytest.raises(ValueError, match="GRISTMILL_PROMETHEUS_URL"):
        ResourceMonitor(settings, transactions=None)  # type: ignore[arg-type]
    monitor = ResourceMonitor(settings.model_copy(update={
        "prometheus_url": "http://prometheus:9090", "prometheus_scrape_interval_s": 15.0}),
        transactions=None)  # type: ignore[arg-type]
    source = monitor.source(session=None)  # type: ignore[arg-type]
    assert isinstance(source, PrometheusSource)
    assert source.url == "http://prometheus:9090" and source.min_step_s == 15.0
