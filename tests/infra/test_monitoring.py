from __future__ import annotations

import pytest

from gristmill_infra.config import MonitoringSettings
from gristmill_infra.monitoring import (
    Monitoring,
    MonitoringArgs,
    dcgm_exporter_values,
    kube_prometheus_stack_values,
    prometheus_url,
)
from tests.infra.helpers import run_pulumi
from tests.infra.mocks import GristmillMocks

SETTINGS = MonitoringSettings(prometheus_retention="30d", prometheus_storage_gib=100)


def build(gpu_enabled: bool) -> str:
    result: str = run_pulumi(
        lambda: (
            Monitoring(
                "dev-monitoring",
                MonitoringArgs(settings=SETTINGS, storage_class="gp3", gpu_enabled=gpu_enabled),
            ).prometheus_url
        )
    )
    return result


def test_prometheus_keeps_history_on_a_persistent_volume() -> None:
    spec = kube_prometheus_stack_values(SETTINGS, "gp3")["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    assert spec["retentionSize"] == "85GB"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"] == {"requests": {"storage": "100Gi"}}
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_node_exporter_also_runs_on_gpu_nodes() -> None:
    values = kube_prometheus_stack_values(SETTINGS, "gp3")
    assert values["prometheus-node-exporter"]["tolerations"] == [{"operator": "Exists"}]


def test_dcgm_exporter_runs_on_gpu_nodes_and_is_scraped() -> None:
    values = dcgm_exporter_values()
    assert values["nodeSelector"] == {"gristmill.io/pool": "gpu"}
    assert values["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert values["serviceMonitor"]["enabled"] is True


@pytest.mark.parametrize("gpu_enabled", [True, False])
def test_releases_installed(mocks: GristmillMocks, gpu_enabled: bool) -> None:
    url = build(gpu_enabled)
    releases = mocks.releases()
    assert url == "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
    assert url == prometheus_url()
    assert releases["kube-prometheus-stack"]["namespace"] == "monitoring"
    assert (
        releases["kube-prometheus-stack"]["values"]["fullnameOverride"] == "kube-prometheus-stack"
    )
    assert ("dcgm-exporter" in releases) is gpu_enabled
