"""Helm charts the environment installs, pinned so that `pulumi up` is repeatable.

Upgrading a chart is a reviewed change to this file (see docs/environments-on-aws.md,
"Upgrade"). Every version below was checked on 2026-12-05 against the chart repository's own
index or release tag, and the values Gristmill sets against that version's values.yaml
(Traefik: its values.schema.json); the sources are listed in docs/environments-on-aws.md,
"Pinned versions and where each was confirmed".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repository: str


TRAEFIK = Chart("traefik", "39.0.8", "https://traefik.github.io/charts")
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "87.21.0", "https://prometheus-community.github.io/helm-charts"
)
DCGM_EXPORTER = Chart(
    "dcgm-exporter", "4.8.2", "https://nvidia.github.io/dcgm-exporter/helm-charts"
)
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin", "0.19.3", "https://nvidia.github.io/k8s-device-plugin"
)
CLUSTER_AUTOSCALER = Chart(
    "cluster-autoscaler", "9.59.0", "https://kubernetes.github.io/autoscaler"
)
AWS_LOAD_BALANCER_CONTROLLER = Chart(
    "aws-load-balancer-controller", "1.14.1", "https://aws.github.io/eks-charts"
)
