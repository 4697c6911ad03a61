from __future__ import annotations

import json

import pytest

from gristmill_infra.config import MonitoringSettings
from gristmill_infra.monitoring import (
    METRICS_PORT,
    METRICS_SERVICE,
    ControlServiceMonitoring,
    ControlServiceMonitoringArgs,
    Monitoring,
    MonitoringArgs,
    alert_rules,
    control_metrics_settings,
    dashboard,
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


def test_kube_prometheus_stack_picks_up_every_rule() -> None:
    spec = kube_prometheus_stack_values(SETTINGS, "gp3")["prometheus"]["prometheusSpec"]
    assert spec["ruleSelectorNilUsesHelmValues"] is False


def test_control_service_is_scraped_alerted_on_and_has_a_dashboard(
        mocks: GristmillMocks) -> None:
    control = {"app.kubernetes.io/name": "gristmill", "app.kubernetes.io/component": "control"}
    run_pulumi(lambda: ControlServiceMonitoring(
        "dev-control-monitoring",
        ControlServiceMonitoringArgs(control_namespace="gristmill", control_labels=control),
    ).urn)
    service = mocks.one("kubernetes:core/v1:Service", "control-monitoring").inputs
    assert service["metadata"]["namespace"] == "gristmill"
    assert service["spec"]["selector"] == control
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT}]
    assert control_metrics_settings()["GRISTMILL_METRICS_PORT"] == str(METRICS_PORT)

    monitor = mocks.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor").inputs
    assert monitor["metadata"]["namespace"] == "gristmill"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # the alerts select the job Prometheus names after the Service
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == METRICS_SERVICE
    rules = mocks.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs
    assert rules["metadata"]["namespace"] == "monitoring"
    assert rules["spec"] == alert_rules()
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    assert any(f'job="{job}"' in e for e in exprs)
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {"GristmillControlServiceDown", "GristmillHighErrorRate",
            "GristmillElasticQueueWaitHigh", "GristmillSchedulerLagging",
            "GristmillWorkerCrashLoop", "GristmillDataStoreErrors",
            "GristmillDataDirDiskLow"} <= alerts

    dashboard_map = mocks.one("kubernetes:core/v1:ConfigMap", "dashboard").inputs
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_map["metadata"]["namespace"] == "monitoring"
    (content,) = dashboard_map["data"].values()
    assert json.loads(content) == dashboard()
    assert dashboard()["uid"] == "gristmill-control"


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
