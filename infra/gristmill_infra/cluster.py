"""The EKS control plane: pinned version, control-plane logs, encrypted secrets, an OIDC
provider for IAM roles for service accounts, and the VPC CNI with network policies on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra import eks_addons
from gristmill_infra.config import ClusterSettings
from gristmill_infra.iam import irsa_role, managed_policy_arn, service_role
from gristmill_infra.kubeconfig import build_kubeconfig
from gristmill_infra.policies import VPC_CNI_SERVICE_ACCOUNT


@dataclass(frozen=True)
class ClusterArgs:
    settings: ClusterSettings
    environment: str
    region: str
    partition: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]


class Cluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    version: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    # Nodes wait for it: without the CNI they never turn Ready.
    vpc_cni: aws.eks.Addon

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Cluster", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        role, attachments = service_role(
            f"{name}-control-plane",
            "eks.amazonaws.com",
            ["AmazonEKSClusterPolicy"],
            args.partition,
            self,
        )
        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in {settings.name}",
            enable_key_rotation=True,
            opts=child,
        )
        # EKS would create this group itself with no expiry; owning it bounds the log bill.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{settings.name}/cluster",
            retention_in_days=settings.log_retention_days,
            opts=child,
        )

        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=settings.name,
            version=settings.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_ids),
                endpoint_private_access=True,
                # No CIDR configured: reachable from inside the VPC only.
                endpoint_public_access=bool(settings.endpoint_public_cidrs),
                public_access_cidrs=list(settings.endpoint_public_cidrs) or None,
            ),
            enabled_cluster_log_types=list(settings.log_types),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*attachments, log_group]),
        )

        issuer_url: pulumi.Output[str] = cluster.identities[0].oidcs[0].issuer
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=issuer_url,
            client_id_lists=["sts.amazonaws.com"],
            opts=child,
        )

        for i, principal in enumerate(settings.admin_role_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=principal,
                type="STANDARD",
                opts=child,
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=cluster.name,
                principal_arn=principal,
                policy_arn=pulumi.Output.concat(
                    "arn:",
                    args.partition,
                    ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                ),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry]),
            )

        # NetworkPolicy objects are only enforced when the VPC CNI runs its policy agent.
        # Its AWS permissions come through its own service account (IRSA), not the node
        # role that every pod on the node could otherwise borrow.
        cni_namespace, cni_service_account = VPC_CNI_SERVICE_ACCOUNT
        cni_role = irsa_role(
            f"{name}-vpc-cni",
            oidc_provider_arn=oidc.arn,
            oidc_issuer_url=issuer_url,
            namespace=cni_namespace,
            service_account=cni_service_account,
            parent=self,
        )
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni",
            role=cni_role.name,
            policy_arn=managed_policy_arn(args.partition, "AmazonEKS_CNI_Policy"),
            opts=pulumi.ResourceOptions(parent=cni_role),
        )
        self.vpc_cni = aws.eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=cluster.name,
            addon_name=eks_addons.VPC_CNI,
            addon_version=eks_addons.addon_version(settings.kubernetes_version, eks_addons.VPC_CNI),
            service_account_role_arn=cni_role.arn,
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cni_policy]),
        )

        ca_data: pulumi.Output[str] = cluster.certificate_authority.data
        self.name = cluster.name
        self.version = cluster.version
        self.endpoint = cluster.endpoint
        self.security_group_id = cluster.vpc_config.cluster_security_group_id
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer_url = issuer_url
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, cluster.endpoint, ca_data).apply(
                lambda v: json.dumps(build_kubeconfig(v[0], v[1], v[2], args.region))
            )
        )
        self.register_outputs(
            {
                "name": self.name,
                "endpoint": self.endpoint,
                "oidc_provider_arn": self.oidc_provider_arn,
                "kubeconfig": self.kubeconfig,
            }
        )
