from __future__ import annotations

from typing import Any

from gristmill_infra.nodepools import NodePools, NodePoolsArgs
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import GristmillMocks


def build(**overrides: str) -> None:
    cfg = stack_config("dev", **overrides)

    def program() -> object:
        pools = NodePools(
            "dev-nodes",
            NodePoolsArgs(
                cluster_name="gristmill-dev",
                kubernetes_version="1.35",
                subnet_ids=["subnet-a", "subnet-b"],
                partition="aws",
                cpu=cfg.cpu_pool,
                gpu=cfg.gpu_pool,
            ),
        )
        return pools.node_role_arn

    run_pulumi(program)


def node_groups(mocks: GristmillMocks) -> dict[str, dict[str, object]]:
    return {r.name: r.inputs for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup")}


def test_gpu_pool_is_tainted_labelled_and_scales_to_zero(mocks: GristmillMocks) -> None:
    build(gpuInstanceTypes='["g6.xlarge", "g6e.2xlarge"]', gpuMaxNodes="4")
    groups = node_groups(mocks)
    # One group per instance type: the cluster autoscaler's simulation assumes every node
    # of a group has the same CPU, memory and GPUs.
    assert sorted(groups) == [
        "dev-nodes-cpu", "dev-nodes-gpu-g6-xlarge", "dev-nodes-gpu-g6e-2xlarge"
    ]
    for name, (instance_type, accelerator) in {
        "dev-nodes-gpu-g6-xlarge": ("g6.xlarge", "nvidia-l4"),
        "dev-nodes-gpu-g6e-2xlarge": ("g6e.2xlarge", "nvidia-l40s"),
    }.items():
        gpu = groups[name]
        assert gpu["amiType"] == "AL2023_x86_64_NVIDIA"
        assert gpu["instanceTypes"] == [instance_type]
        assert gpu["labels"] == {
            "gristmill.io/pool": "gpu",
            "k8s.amazonaws.com/accelerator": accelerator,
        }
        assert gpu["taints"] == [
            {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
        ]
        assert gpu["scalingConfig"] == {"minSize": 0, "maxSize": 4, "desiredSize": 0}
        assert gpu["capacityType"] == "SPOT"
        assert gpu["subnetIds"] == ["subnet-a", "subnet-b"]


def test_nodes_boot_with_imdsv2_a_hop_limit_of_one_and_encrypted_disks(
    mocks: GristmillMocks,
) -> None:
    build(cpuDiskSizeGiB="80", gpuDiskSizeGiB="200")
    templates = {t.name: t for t in mocks.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    assert sorted(templates) == ["dev-nodes-cpu", "dev-nodes-gpu"]
    for name, size in (("dev-nodes-cpu", 80), ("dev-nodes-gpu", 200)):
        inputs = templates[name].inputs
        assert inputs["metadataOptions"] == {
            "httpEndpoint": "enabled",
            "httpTokens": "required",
            "httpPutResponseHopLimit": 1,
        }
        (disk,) = inputs["blockDeviceMappings"]
        assert disk["ebs"]["volumeSize"] == size
        assert disk["ebs"]["encrypted"] == "true"
    for group in node_groups(mocks).values():
        # EKS refuses diskSize beside a launch template: the size lives in the template.
        assert "diskSize" not in group
        template = templates["dev-nodes-gpu" if "gpu" in str(group["labels"]) else "dev-nodes-cpu"]
        launch_template: Any = group["launchTemplate"]
        assert launch_template["id"] == template.state.get("id", f"{template.name}-id")


def test_cpu_pool_has_its_bounds_and_no_taint(mocks: GristmillMocks) -> None:
    build(cpuMinNodes="3", cpuMaxNodes="7", cpuInstanceTypes='["m7i.2xlarge"]')
    cpu = node_groups(mocks)["dev-nodes-cpu"]
    assert cpu["amiType"] == "AL2023_x86_64_STANDARD"
    assert cpu["instanceTypes"] == ["m7i.2xlarge"]
    assert cpu["scalingConfig"] == {"minSize": 3, "maxSize": 7, "desiredSize": 3}
    assert cpu["labels"] == {"gristmill.io/pool": "cpu"}
    assert not cpu.get("taints")
    assert cpu["capacityType"] == "ON_DEMAND"
    assert cpu["version"] == "1.35"


def test_no_gpu_pool_when_disabled(mocks: GristmillMocks) -> None:
    build(gpuEnabled="false")
    assert list(node_groups(mocks)) == ["dev-nodes-cpu"]


def test_nodes_can_only_pull_images(mocks: GristmillMocks) -> None:
    build()
    policies = sorted(
        r.inputs["policyArn"]
        for r in mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    )
    # No CNI policy: the VPC CNI has its own role (IRSA), pods cannot borrow the node's.
    assert policies == [
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    ]
