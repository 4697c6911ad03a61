"""IAM roles shared by several components: service roles and IAM roles for service accounts."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from gristmill_infra.policies import irsa_trust_policy, service_trust_policy


def managed_policy_arn(partition: pulumi.Input[str], name: str) -> pulumi.Output[str]:
    return pulumi.Output.concat("arn:", partition, ":iam::aws:policy/", name)


def service_role(
    name: str,
    service: str,
    managed_policies: list[str],
    partition: pulumi.Input[str],
    parent: pulumi.Resource,
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """A role assumed by an AWS service, with AWS-managed policies attached."""
    role = aws.iam.Role(
        name,
        assume_role_policy=json.dumps(service_trust_policy(service)),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    attachments = [
        aws.iam.RolePolicyAttachment(
            f"{name}-{policy.lower().replace('_', '-')}",
            role=role.name,
            policy_arn=managed_policy_arn(partition, policy),
            opts=pulumi.ResourceOptions(parent=role),
        )
        for policy in managed_policies
    ]
    return role, attachments


def irsa_role(
    name: str,
    *,
    oidc_provider_arn: pulumi.Input[str],
    oidc_issuer_url: pulumi.Input[str],
    namespace: str,
    service_account: str,
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """A role only the pods of one Kubernetes service account can assume."""
    trust = pulumi.Output.all(oidc_provider_arn, oidc_issuer_url).apply(
        lambda args: json.dumps(irsa_trust_policy(args[0], args[1], namespace, service_account))
    )
    return aws.iam.Role(
        name,
        assume_role_policy=trust,
        description=f"IRSA role of {namespace}/{service_account}",
        opts=pulumi.ResourceOptions(parent=parent),
    )
