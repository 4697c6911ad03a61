"""Cluster metrics: kube-prometheus-stack (node exporter, cAdvisor through the kubelet,
kube-state-metrics, Prometheus) and NVIDIA's DCGM exporter on GPU nodes. The control
service reads CPU, RAM, GPU, VRAM, disk and network per worker pod from this Prometheus.

The control service's own metrics are scraped too (ControlServiceMonitoring): a Service on
its metrics port, a ServiceMonitor, the alerts (PrometheusRule) and the Grafana dashboard
(a ConfigMap Grafana's sidecar loads), both kept as files in monitoring_assets/."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.core.v1 import ServiceSpecArgsDict

from gristmill_infra import charts
from gristmill_infra.config import MonitoringSettings
from gristmill_infra.labels import CPU_POOL, GPU_POOL, POOL_LABEL, gpu_toleration, pool_affinity

NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
ASSETS = Path(__file__).parent / "monitoring_assets"
DASHBOARD_FILE = ASSETS / "gristmill-dashboard.json"
ALERTS_FILE = ASSETS / "gristmill-alerts.yaml"
# The control service's metrics listener (GRISTMILL_METRICS_PORT): reachable inside the
# cluster only, never through the ingress, which routes the service's own port.
METRICS_PORT = 9464
METRICS_SERVICE = "gristmill-metrics"  # also the `job` label the alerts select


def prometheus_url(namespace: str = NAMESPACE, release: str = RELEASE) -> str:
    """In-cluster URL of the chart's Prometheus Service (`<fullname>-prometheus`, port 9090)."""
    return f"http://{release}-prometheus.{namespace}.svc.cluster.local:9090"


def kube_prometheus_stack_values(
    settings: MonitoringSettings, storage_class: pulumi.Input[str]
) -> dict[str, Any]:
    # Stop before the volume is full: Prometheus cannot write its WAL on a full disk.
    retention_size = f"{int(settings.prometheus_storage_gib * 0.85)}GB"
    return {
        "fullnameOverride": RELEASE,
        # The control service is the consumer; dashboards are opt-in. The chart's default
        # rules (nodes, pods, volumes, the API server) fire into Alertmanager.
        "grafana": {"enabled": False},
        "defaultRules": {"create": True},
        "alertmanager": alertmanager_values(settings.alert_webhook_url),
        # EKS runs these on the managed control plane, where they cannot be scraped.
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "prometheus": {
            "prometheusSpec": {
                "retention": settings.prometheus_retention,
                "retentionSize": retention_size,
                # Pick up every ServiceMonitor (DCGM's included), not only this release's.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                # ...and every PrometheusRule (Gristmill's alerts)
                "ruleSelectorNilUsesHelmValues": False,
                "nodeSelector": {POOL_LABEL: CPU_POOL},
                "resources": {
                    "requests": {"cpu": "500m", "memory": "2Gi"},
                    "limits": {"memory": "4Gi"},
                },
                # Without it the volume outlives `pulumi destroy`: StatefulSet claims are
                # kept when the StatefulSet goes.
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Delete",
                    "whenScaled": "Retain",
                },
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {
                                "requests": {"storage": f"{settings.prometheus_storage_gib}Gi"}
                            },
                        }
                    }
                },
            }
        },
        # Disk and network of GPU nodes too, despite their taint.
        "prometheus-node-exporter": {"tolerations": [{"operator": "Exists"}]},
    }


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """Every alert but the always-firing Watchdog goes to the webhook when one is set;
    otherwise alerts are only listed by Alertmanager (`kubectl port-forward` to see them)."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    route: dict[str, Any] = {
        "receiver": "null",
        "group_by": ["namespace", "alertname"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "routes": [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}],
    }
    if webhook_url:
        receivers.append(
            {
                "name": "webhook",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        )
        route["receiver"] = "webhook"
    return {"route": route, "receivers": receivers}


def alertmanager_values(webhook_url: str) -> dict[str, Any]:
    return {
        "enabled": True,
        "config": alertmanager_config(webhook_url),
        "alertmanagerSpec": {
            "replicas": 1,
            "nodeSelector": {POOL_LABEL: CPU_POOL},
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"memory": "256Mi"},
            },
        },
    }


def dcgm_exporter_values() -> dict[str, Any]:
    return {
        "nodeSelector": {POOL_LABEL: GPU_POOL},
        "affinity": pool_affinity(GPU_POOL),
        "tolerations": [gpu_toleration()],
        # GPU and VRAM series carry the pod's namespace and name, so they join per worker.
        "serviceMonitor": {"enabled": True, "interval": "15s", "honorLabels": True},
    }


@dataclass(frozen=True)
class MonitoringArgs:
    settings: MonitoringSettings
    storage_class: pulumi.Input[str]
    gpu_enabled: bool


class Monitoring(pulumi.ComponentResource):
    prometheus_url: str

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Monitoring", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE),
            opts=pulumi.ResourceOptions(parent=self),
        )
        stack = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            name=RELEASE,
            chart=charts.KUBE_PROMETHEUS_STACK.name,
            version=charts.KUBE_PROMETHEUS_STACK.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                repo=charts.KUBE_PROMETHEUS_STACK.repository
            ),
            namespace=namespace.metadata.name,
            values=kube_prometheus_stack_values(args.settings, args.storage_class),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.gpu_enabled:
            k8s.helm.v3.Release(
                f"{name}-dcgm-exporter",
                name="dcgm-exporter",
                chart=charts.DCGM_EXPORTER.name,
                version=charts.DCGM_EXPORTER.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                    repo=charts.DCGM_EXPORTER.repository
                ),
                namespace=namespace.metadata.name,
                values=dcgm_exporter_values(),
                # Its ServiceMonitor needs the CRDs the Prometheus stack installs.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[stack]),
            )

        self.prometheus_url = prometheus_url()
        self.register_outputs({"prometheus_url": self.prometheus_url})


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def alert_rules() -> dict[str, Any]:
    """The PrometheusRule spec: the rule file as promtool reads it."""
    loaded: dict[str, Any] = yaml.safe_load(ALERTS_FILE.read_text())
    return loaded


def control_metrics_settings() -> dict[str, str]:
    """What the control service needs in its environment to be scraped."""
    return {"GRISTMILL_METRICS_PORT": str(METRICS_PORT), "GRISTMILL_METRICS_HOST": "0.0.0.0"}


def metrics_service_spec(control_labels: Mapping[str, str]) -> ServiceSpecArgsDict:
    return {
        "selector": dict(control_labels),
        "ports": [{"name": "metrics", "port": METRICS_PORT, "target_port": METRICS_PORT}],
    }


def service_monitor_spec(control_namespace: str) -> dict[str, Any]:
    return {
        "jobLabel": "app.kubernetes.io/instance",
        "namespaceSelector": {"matchNames": [control_namespace]},
        "selector": {"matchLabels": {"app.kubernetes.io/instance": METRICS_SERVICE}},
        # every replica is a target of its own: each one's counters are its own
        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s",
                       "scrapeTimeout": "10s"}],
    }


@dataclass(frozen=True)
class ControlServiceMonitoringArgs:
    control_namespace: str
    control_labels: Mapping[str, str]
    monitoring_namespace: str = NAMESPACE
    # Grafana's dashboard sidecar (kube-prometheus-stack's, or your own Grafana's) loads
    # ConfigMaps carrying this label
    dashboard_labels: Mapping[str, str] = field(
        default_factory=lambda: {"grafana_dashboard": "1"})


class ControlServiceMonitoring(pulumi.ComponentResource):
    """Created after the control service (its namespace must exist)."""

    def __init__(self, name: str, args: ControlServiceMonitoringArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gristmill:infra:ControlServiceMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": "gristmill",
                  "app.kubernetes.io/instance": METRICS_SERVICE}
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=METRICS_SERVICE, namespace=args.control_namespace, labels=labels),
            spec=metrics_service_spec(args.control_labels),
            opts=child,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-service-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=METRICS_SERVICE, namespace=args.control_namespace, labels=labels),
            spec=service_monitor_spec(args.control_namespace),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service]),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gristmill-alerts", namespace=args.monitoring_namespace,
                labels={**labels, "release": RELEASE}),
            spec=alert_rules(),
            opts=child,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gristmill-dashboard", namespace=args.monitoring_namespace,
                labels={**labels, **args.dashboard_labels}),
            data={"gristmill-control-service.json": DASHBOARD_FILE.read_text()},
            opts=child,
        )
        self.register_outputs({})
