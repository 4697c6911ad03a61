"""In-cluster services the node pools rely on: the cluster autoscaler (pending pods bring
nodes, idle nodes go away), the NVIDIA device plugin on GPU nodes, and EBS volumes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from gristmill_infra import charts, eks_addons
from gristmill_infra.iam import irsa_role, managed_policy_arn
from gristmill_infra.labels import CPU_POOL, GPU_POOL, POOL_LABEL, gpu_toleration, pool_affinity
from gristmill_infra.policies import (
    EBS_CSI_SERVICE_ACCOUNT,
    EKS_CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
    cluster_autoscaler_policy,
)

STORAGE_CLASS = "gp3"


def cluster_autoscaler_values(
    cluster_name: str, region: str, kubernetes_version: str, role_arn: pulumi.Input[str]
) -> dict[str, Any]:
    _, service_account = EKS_CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "fullnameOverride": "cluster-autoscaler",
        # The autoscaler's minor version must match the cluster's.
        "image": {"tag": f"v{kubernetes_version}.0"},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": service_account,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        "extraArgs": {
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            "skip-nodes-with-system-pods": False,
            # GPU nodes are the costly ones: give them back five minutes after the last
            # GPU pod ends instead of the default ten.
            "scale-down-unneeded-time": "5m",
        },
        "nodeSelector": {POOL_LABEL: CPU_POOL},
    }


def device_plugin_values() -> dict[str, Any]:
    return {
        "nodeSelector": {POOL_LABEL: GPU_POOL},
        # The chart's default affinity expects node-feature-discovery labels our nodes do
        # not carry; this replaces it with the GPU pool label.
        "affinity": pool_affinity(GPU_POOL),
        "tolerations": [gpu_toleration()],
    }


@dataclass(frozen=True)
class ClusterAddonsArgs:
    cluster_name: str
    kubernetes_version: str
    region: str
    partition: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    gpu_enabled: bool
    # The EBS CSI add-on only turns ACTIVE once its controller pods run on a node.
    nodes: pulumi.Resource


class ClusterAddons(pulumi.ComponentResource):
    storage_class_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:ClusterAddons", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        ca_namespace, ca_service_account = EKS_CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
        autoscaler_role = irsa_role(
            f"{name}-cluster-autoscaler",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=ca_namespace,
            service_account=ca_service_account,
            parent=self,
        )
        aws.iam.RolePolicy(
            f"{name}-cluster-autoscaler",
            role=autoscaler_role.id,
            policy=json.dumps(cluster_autoscaler_policy(args.cluster_name)),
            opts=pulumi.ResourceOptions(parent=autoscaler_role),
        )
        k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler",
            name="cluster-autoscaler",
            chart=charts.CLUSTER_AUTOSCALER.name,
            version=charts.CLUSTER_AUTOSCALER.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                repo=charts.CLUSTER_AUTOSCALER.repository
            ),
            namespace=ca_namespace,
            values=cluster_autoscaler_values(
                args.cluster_name, args.region, args.kubernetes_version, autoscaler_role.arn
            ),
            opts=child,
        )

        if args.gpu_enabled:
            k8s.helm.v3.Release(
                f"{name}-nvidia-device-plugin",
                name="nvidia-device-plugin",
                chart=charts.NVIDIA_DEVICE_PLUGIN.name,
                version=charts.NVIDIA_DEVICE_PLUGIN.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                    repo=charts.NVIDIA_DEVICE_PLUGIN.repository
                ),
                namespace="kube-system",
                values=device_plugin_values(),
                opts=child,
            )

        ebs_namespace, ebs_service_account = EBS_CSI_SERVICE_ACCOUNT
        ebs_role = irsa_role(
            f"{name}-ebs-csi",
            oidc_provider_arn=args.oidc_provider_arn,
            oidc_issuer_url=args.oidc_issuer_url,
            namespace=ebs_namespace,
            service_account=ebs_service_account,
            parent=self,
        )
        ebs_policy = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi",
            role=ebs_role.name,
            policy_arn=managed_policy_arn(args.partition, "service-role/AmazonEBSCSIDriverPolicy"),
            opts=pulumi.ResourceOptions(parent=ebs_role),
        )
        ebs_addon = aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=args.cluster_name,
            addon_name=eks_addons.EBS_CSI,
            addon_version=eks_addons.addon_version(args.kubernetes_version, eks_addons.EBS_CSI),
            service_account_role_arn=ebs_role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ebs_policy, args.nodes]),
        )
        # EKS installs these two unmanaged at creation and never upgrades them; as managed
        # add-ons their versions are pinned and upgraded with the cluster.
        for addon in (eks_addons.COREDNS, eks_addons.KUBE_PROXY):
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=args.cluster_name,
                addon_name=addon,
                addon_version=eks_addons.addon_version(args.kubernetes_version, addon),
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                # CoreDNS only turns ACTIVE once its pods run on a node.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[args.nodes]),
            )

        storage_class = k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=STORAGE_CLASS,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner="ebs.csi.aws.com",
            parameters={"type": "gp3", "encrypted": "true"},
            # Binds a volume in the zone where its pod lands, not in a random one.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ebs_addon]),
        )

        self.storage_class_name = storage_class.metadata.name
        self.register_outputs({"storage_class_name": self.storage_class_name})
