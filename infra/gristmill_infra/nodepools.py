"""Managed node groups: a CPU pool that is always up, and a GPU pool (one group per
instance type) that is labelled, tainted for GPU pods only, and scales down to zero nodes
when no GPU step is waiting. Every node boots from a launch template that keeps pods away
from the instance metadata service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra.config import NodePoolSettings
from gristmill_infra.iam import service_role
from gristmill_infra.labels import (
    ACCELERATOR_LABEL,
    CPU_POOL,
    GPU_POOL,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    POOL_LABEL,
    accelerator_label,
)

CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"
# Amazon Linux 2023 with the NVIDIA driver and container toolkit; the device plugin that
# advertises `nvidia.com/gpu` is installed separately (cluster_addons.py).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"

# No AmazonEKS_CNI_Policy here: the VPC CNI gets it through its own service account
# (cluster.py), so no pod can borrow the node role to change network interfaces.
NODE_MANAGED_POLICIES = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryReadOnly",
]

# The cluster autoscaler owns the desired size; Pulumi only sets the bounds.
_AUTOSCALER_OWNS = ["scalingConfig.desiredSize"]


def metadata_options() -> aws.ec2.LaunchTemplateMetadataOptionsArgs:
    """IMDSv2 only, one network hop: a pod with its own network namespace (everything but
    host-network system pods) cannot reach the node's instance metadata, and so not the node
    role's credentials."""
    return aws.ec2.LaunchTemplateMetadataOptionsArgs(
        http_endpoint="enabled",
        http_tokens="required",
        http_put_response_hop_limit=1,
    )


def root_volume(size_gib: int) -> aws.ec2.LaunchTemplateBlockDeviceMappingArgs:
    """The AL2023 EKS images boot from /dev/xvda; images and emptyDirs live there."""
    return aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
        device_name="/dev/xvda",
        ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
            volume_size=size_gib,
            volume_type="gp3",
            encrypted="true",
            delete_on_termination="true",
        ),
    )


def gpu_group_suffix(instance_type: str) -> str:
    """`g6e.2xlarge` -> `g6e-2xlarge`, part of the node group's resource name."""
    return instance_type.replace(".", "-")


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
    # One managed node group per GPU instance type: the cluster autoscaler assumes every
    # node of a group has the same CPU, memory and GPUs.
    gpu: list[aws.eks.NodeGroup]
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

        def launch_template(
            suffix: str, settings: NodePoolSettings
        ) -> aws.eks.NodeGroupLaunchTemplateArgs:
            template = aws.ec2.LaunchTemplate(
                f"{name}-{suffix}",
                description=f"Gristmill {suffix} nodes: IMDSv2, hop limit 1, encrypted gp3",
                metadata_options=metadata_options(),
                block_device_mappings=[root_volume(settings.disk_size_gib)],
                update_default_version=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            return aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
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
            launch_template=launch_template("cpu", args.cpu),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.cpu.min_nodes,
                max_size=args.cpu.max_nodes,
                desired_size=args.cpu.min_nodes,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={POOL_LABEL: CPU_POOL},
            opts=group_opts,
        )

        self.gpu = []
        if args.gpu is not None:
            gpu = args.gpu
            template = launch_template("gpu", gpu)
            for instance_type in gpu.instance_types:
                self.gpu.append(
                    aws.eks.NodeGroup(
                        f"{name}-gpu-{gpu_group_suffix(instance_type)}",
                        cluster_name=args.cluster_name,
                        version=args.kubernetes_version,
                        node_role_arn=role.arn,
                        subnet_ids=list(args.subnet_ids),
                        ami_type=GPU_AMI_TYPE,
                        instance_types=[instance_type],
                        capacity_type=gpu.capacity_type,
                        launch_template=template,
                        scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                            # The bounds hold per group: with several types, the autoscaler
                            # may run up to max_nodes of each.
                            min_size=gpu.min_nodes,
                            max_size=gpu.max_nodes,
                            # Start empty: a GPU node is only paid for while a GPU pod
                            # needs it.
                            desired_size=gpu.min_nodes,
                        ),
                        update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
                        labels={
                            POOL_LABEL: GPU_POOL,
                            ACCELERATOR_LABEL: accelerator_label(instance_type) or "nvidia",
                        },
                        # Keeps every pod that does not tolerate GPUs (system pods, the
                        # control service, CPU steps) off the expensive nodes.
                        taints=[
                            aws.eks.NodeGroupTaintArgs(
                                key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE, effect="NO_SCHEDULE"
                            )
                        ],
                        opts=group_opts,
                    )
                )

        self.node_role_arn = role.arn
        self.register_outputs(
            {
                "node_role_arn": self.node_role_arn,
                "cpu_node_group": self.cpu.node_group_name,
                "gpu_node_groups": [group.node_group_name for group in self.gpu],
            }
        )
