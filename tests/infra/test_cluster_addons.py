from __future__ import annotations

import json

import pulumi_aws as aws
import pytest

from gristmill_infra.cluster_addons import (
    ClusterAddons,
    ClusterAddonsArgs,
    cluster_autoscaler_values,
    device_plugin_values,
)
from tests.infra.helpers import run_pulumi
from tests.infra.mocks import OIDC_ISSUER, GristmillMocks

PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/oidc.example/id/X"


def build(gpu_enabled: bool = True) -> None:
    def program() -> object:
        nodes = aws.eks.NodeGroup(
            "cpu",
            cluster_name="gristmill-dev",
            node_role_arn="arn:aws:iam::123456789012:role/node",
            subnet_ids=["subnet-a"],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=1, max_size=2, desired_size=1
            ),
        )
        addons = ClusterAddons(
            "dev-addons",
            ClusterAddonsArgs(
                cluster_name="gristmill-dev",
                kubernetes_version="1.35",
                region="eu-west-3",
                partition="aws",
                oidc_provider_arn=PROVIDER_ARN,
                oidc_issuer_url=OIDC_ISSUER,
                gpu_enabled=gpu_enabled,
                nodes=nodes,
            ),
        )
        return addons.storage_class_name

    run_pulumi(program)


def test_device_plugin_runs_only_on_gpu_nodes() -> None:
    values = device_plugin_values()
    assert values["nodeSelector"] == {"gristmill.io/pool": "gpu"}
    assert values["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "gristmill.io/pool", "operator": "In", "values": ["gpu"]}]}
    ]


def test_autoscaler_values_match_cluster_and_version() -> None:
    values = cluster_autoscaler_values("gristmill-dev", "eu-west-3", "1.34", "arn:role")
    assert values["autoDiscovery"] == {"clusterName": "gristmill-dev"}
    assert values["awsRegion"] == "eu-west-3"
    assert values["image"] == {"tag": "v1.34.0"}
    assert values["rbac"]["serviceAccount"]["name"] == "cluster-autoscaler"
    assert values["rbac"]["serviceAccount"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:role"
    }


def test_cluster_autoscaler_is_installed_with_its_own_scoped_role(mocks: GristmillMocks) -> None:
    build()
    release = mocks.releases()["cluster-autoscaler"]
    role = mocks.one("aws:iam/role:Role", "cluster-autoscaler")
    assert release["namespace"] == "kube-system"
    assert release["values"]["rbac"]["serviceAccount"]["annotations"] == {
        "eks.amazonaws.com/role-arn": role.state["arn"]
    }
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:kube-system:cluster-autoscaler" in trust.values()
    policy = json.loads(
        mocks.one("aws:iam/rolePolicy:RolePolicy", "cluster-autoscaler").inputs["policy"]
    )
    assert policy["Statement"][1]["Condition"]["StringEquals"] == {
        "aws:ResourceTag/k8s.io/cluster-autoscaler/gristmill-dev": "owned"
    }


@pytest.mark.parametrize("gpu_enabled", [True, False])
def test_device_plugin_only_with_a_gpu_pool(mocks: GristmillMocks, gpu_enabled: bool) -> None:
    build(gpu_enabled)
    assert ("nvidia-device-plugin" in mocks.releases()) is gpu_enabled


def test_encrypted_gp3_is_the_default_storage_class(mocks: GristmillMocks) -> None:
    build()
    storage_class = mocks.one("kubernetes:storage.k8s.io/v1:StorageClass").inputs
    assert storage_class["metadata"]["name"] == "gp3"
    assert storage_class["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    assert storage_class["provisioner"] == "ebs.csi.aws.com"
    assert storage_class["parameters"] == {"type": "gp3", "encrypted": "true"}
    addon = mocks.one("aws:eks/addon:Addon", "ebs-csi").inputs
    ebs_role = mocks.one("aws:iam/role:Role", "ebs-csi")
    assert addon["addonName"] == "aws-ebs-csi-driver"
    assert addon["serviceAccountRoleArn"] == ebs_role.state["arn"]


def test_system_add_ons_are_managed_and_pinned(mocks: GristmillMocks) -> None:
    from gristmill_infra.eks_addons import ADDON_VERSIONS

    build()
    addons = {r.inputs["addonName"]: r.inputs for r in mocks.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"coredns", "kube-proxy", "aws-ebs-csi-driver"}
    for name, inputs in addons.items():
        assert inputs["addonVersion"] == ADDON_VERSIONS["1.35"][name]


def test_every_supported_version_pins_every_add_on() -> None:
    from gristmill_infra.eks_addons import ADDON_VERSIONS, ADDONS, addon_version

    for version, pins in ADDON_VERSIONS.items():
        assert set(pins) == set(ADDONS), version
        assert all(pin.startswith("v") and "-eksbuild." in pin for pin in pins.values())
    with pytest.raises(KeyError, match="no pinned version of the coredns add-on"):
        addon_version("1.20", "coredns")
