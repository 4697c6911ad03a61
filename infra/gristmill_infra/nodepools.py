"""Managed node groups: a CPU pool that is always up, and a GPU pool that is labelled,
tainted for GPU pods only, and scales down to zero nodes when no GPU step is waiting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra.config import NodePoolSettings
from gristmill_infra.iam import service_role
from gristmill_infra.labels import (
    CPU_POOL,
    GPU_POOL,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    POOL_LABEL,
)

CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"
# Amazon Linux 2023 with the NVIDIA driver and container toolkit; the device plugin that
# advertises `nvidia.com/gpu` is installed separately (cluster_addons.py).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"

NODE_MANAGED_POLICIES = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
]

# The cluster autoscaler owns the desired size; Pulumi only sets the bounds.
_AUTOSCALER_OWNS = ["scalingConfig.desiredSize"]


@dataclass(frozen=True)
class NodePoolsArgs:
    cluster_name: pulumi.Input[str]
    kubernetes_version: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    partition: pulumi.Input[str]
    cpu: NodePoolSettings
    # None: no GPU pool.
    gpu: NodePoolSettings | None


class NodePools(pulumi.ComponentResource):
    cpu: aws.eks.NodeGroup
    gpu: aws.eks.NodeGroup | None
    node_role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: NodePoolsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:NodePools", name, None, opts)
        role, attachments = service_role(
            f"{name}-node", "ec2.amazonaws.com", NODE_MANAGED_POLICIES, args.partition, self
        )
        group_opts = pulumi.ResourceOptions(
            parent=self, depends_on=attachments, ignore_changes=_AUTOSCALER_OWNS
        )

        self.cpu = aws.eks.NodeGroup(
            f"{name}-cpu",
            cluster_name=args.cluster_name,
            version=args.kubernetes_version,
            node_role_arn=role.arn,
            subnet_ids=list(args.subnet_ids),
            ami_type=CPU_AMI_TYPE,
            instance_types=list(args.cpu.instance_types),
            capacity_type=args.cpu.capacity_type,
            disk_size=args.cpu.disk_size_gib,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.cpu.min_nodes,
                max_size=args.cpu.max_nodes,
                desired_size=args.cpu.min_nodes,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={POOL_LABEL: CPU_POOL},
            opts=group_opts,
        )

        self.gpu = None
        if args.gpu is not None:
            self.gpu = aws.eks.NodeGroup(
                f"{name}-gpu",
                cluster_name=args.cluster_name,
                version=args.kubernetes_version,
                node_role_arn=role.arn,
                subnet_ids=list(args.subnet_ids),
                ami_type=GPU_AMI_TYPE,
                instance_types=list(args.gpu.instance_types),
                capacity_type=args.gpu.capacity_type,
                disk_size=args.gpu.disk_size_gib,
                scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                    min_size=args.gpu.min_nodes,
                    max_size=args.gpu.max_nodes,
                    # Start empty: a GPU node is only paid for while a GPU pod needs it.
                    desired_size=args.gpu.min_nodes,
                ),
                update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
                labels={POOL_LABEL: GPU_POOL},
                # Keeps every pod that does not tolerate GPUs (system pods, the control
                # service, CPU steps) off the expensive nodes.
                taints=[
                    aws.eks.NodeGroupTaintArgs(
                        key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE, effect="NO_SCHEDULE"
                    )
                ],
                opts=group_opts,
            )

        self.node_role_arn = role.arn
        self.register_outputs(
            {
                "node_role_arn": self.node_role_arn,
                "cpu_node_group": self.cpu.node_group_name,
                "gpu_node_group": self.gpu.node_group_name if self.gpu else None,
            }
        )
