"""Cluster metrics: kube-prometheus-stack (node exporter, cAdvisor through the kubelet,
kube-state-metrics, Prometheus) and NVIDIA's DCGM exporter on GPU nodes. The control
service reads CPU, RAM, GPU, VRAM, disk and network per worker pod from this Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from gristmill_infra import charts
from gristmill_infra.config import MonitoringSettings
from gristmill_infra.labels import CPU_POOL, GPU_POOL, POOL_LABEL, gpu_toleration, pool_affinity

NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"


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
