from __future__ import annotations

import json

import pulumi

from gristmill_infra.cluster import Cluster, ClusterArgs
from gristmill_infra.eks_addons import ADDON_VERSIONS
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import OIDC_ISSUER, GristmillMocks


def build(**overrides: str) -> dict[str, object]:
    cfg = stack_config("dev", **overrides)

    def program() -> dict[str, object]:
        cluster = Cluster(
            "dev-cluster",
            ClusterArgs(
                settings=cfg.cluster,
                environment="dev",
                region="eu-west-3",
                partition="aws",
                subnet_ids=["subnet-a", "subnet-b"],
            ),
        )
        return {
            "kubeconfig": cluster.kubeconfig,
            "kubeconfig_is_secret": pulumi.Output.from_input(cluster.kubeconfig.is_secret()),
            "oidc_issuer_url": cluster.oidc_issuer_url,
            "security_group_id": cluster.security_group_id,
        }

    result: dict[str, object] = run_pulumi(program)
    return result


def test_control_plane_is_pinned_logged_and_private_to_the_nodes(mocks: GristmillMocks) -> None:
    build(kubernetesVersion="1.34", clusterLogTypes='["api", "audit"]')
    cluster = mocks.one("aws:eks/cluster:Cluster").inputs
    assert cluster["name"] == "gristmill-dev"
    assert cluster["version"] == "1.34"
    assert cluster["enabledClusterLogTypes"] == ["api", "audit"]
    assert cluster["vpcConfig"]["subnetIds"] == ["subnet-a", "subnet-b"]
    assert cluster["vpcConfig"]["endpointPrivateAccess"] is True
    assert cluster["accessConfig"]["authenticationMode"] == "API"


def test_kubernetes_secrets_are_encrypted_with_a_rotated_key(mocks: GristmillMocks) -> None:
    build()
    cluster = mocks.one("aws:eks/cluster:Cluster").inputs
    key = mocks.one("aws:kms/key:Key")
    assert cluster["encryptionConfig"]["resources"] == ["secrets"]
    assert cluster["encryptionConfig"]["provider"]["keyArn"] == key.state["arn"]
    assert key.inputs["enableKeyRotation"] is True


def test_control_plane_logs_expire(mocks: GristmillMocks) -> None:
    build()
    group = mocks.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group["name"] == "/aws/eks/gristmill-dev/cluster"
    assert group["retentionInDays"] == 7


def test_oidc_provider_enables_irsa(mocks: GristmillMocks) -> None:
    result = build()
    provider = mocks.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert provider["url"] == OIDC_ISSUER
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]
    assert result["oidc_issuer_url"] == OIDC_ISSUER


def test_vpc_cni_enforces_network_policies(mocks: GristmillMocks) -> None:
    build()
    addon = mocks.one("aws:eks/addon:Addon", "vpc-cni").inputs
    assert addon["addonName"] == "vpc-cni"
    assert json.loads(addon["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_vpc_cni_gets_its_policy_through_its_own_service_account(mocks: GristmillMocks) -> None:
    build(kubernetesVersion="1.35")
    addon = mocks.one("aws:eks/addon:Addon", "vpc-cni").inputs
    assert addon["addonVersion"] == ADDON_VERSIONS["1.35"]["vpc-cni"]
    role = mocks.one("aws:iam/role:Role", "vpc-cni")
    assert addon["serviceAccountRoleArn"] == role.state["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]
    assert "system:serviceaccount:kube-system:aws-node" in trust["StringEquals"].values()
    attachment = mocks.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "vpc-cni")
    assert attachment.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"


def test_api_endpoint_is_private_without_allowed_cidrs(mocks: GristmillMocks) -> None:
    build(clusterEndpointPublicCidrs="[]")
    vpc = mocks.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc
    mocks.reset()
    build()
    vpc = mocks.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_admin_roles_get_access_entries(mocks: GristmillMocks) -> None:
    build(clusterAdminRoleArns='["arn:aws:iam::123456789012:role/platform-admins"]')
    entry = mocks.one("aws:eks/accessEntry:AccessEntry").inputs
    association = mocks.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation").inputs
    assert entry["principalArn"] == "arn:aws:iam::123456789012:role/platform-admins"
    assert association["policyArn"] == (
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    )
    assert association["accessScope"] == {"type": "cluster"}


def test_control_plane_role_has_the_cluster_policy_only(mocks: GristmillMocks) -> None:
    build()
    attachments = [
        r.inputs["policyArn"]
        for r in mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if "control-plane" in r.name
    ]
    assert attachments == ["arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"]
    role = mocks.one("aws:iam/role:Role", "control-plane").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "eks.amazonaws.com"
    }


def test_kubeconfig_is_a_secret_pointing_at_the_cluster() -> None:
    result = build()
    assert result["kubeconfig_is_secret"] is True
    config = json.loads(str(result["kubeconfig"]))
    assert (
        config["clusters"][0]["cluster"]["server"]
        == "https://EXAMPLE.gr7.eu-west-3.eks.amazonaws.com"
    )
    assert config["users"][0]["user"]["exec"]["args"][3] == "gristmill-dev"
    assert result["security_group_id"] == "sg-0cluster"
