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


def test_alerting_is_on_and_routes_to_the_webhook_when_one_is_set() -> None:
    quiet = kube_prometheus_stack_values(SETTINGS, "gp3")
    assert quiet["alertmanager"]["enabled"] is True
    assert quiet["defaultRules"] == {"create": True}
    assert quiet["alertmanager"]["config"]["route"]["receiver"] == "null"
    loud = kube_prometheus_stack_values(
        MonitoringSettings("30d", 100, alert_webhook_url="https://hooks.example.com/x"), "gp3"
    )["alertmanager"]["config"]
    assert loud["route"]["receiver"] == "webhook"
    (webhook,) = [r for r in loud["receivers"] if r["name"] == "webhook"]
    assert webhook["webhook_configs"] == [{"url": "https://hooks.example.com/x",
                                           "send_resolved": True}]
    # the Watchdog alert always fires by design: never paged
    assert loud["route"]["routes"][0] == {"receiver": "null",
                                          "matchers": ['alertname = "Watchdog"']}
