"""IAM, S3 and ECR policy documents, built by pure functions so their scope is unit-tested."""

from __future__ import annotations

from typing import Any

PolicyDocument = dict[str, Any]

ECR_PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]
ECR_PUSH_ACTIONS = [
    *ECR_PULL_ACTIONS,
    "ecr:DescribeImages",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
]

EKS_CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = ("kube-system", "cluster-autoscaler")
EBS_CSI_SERVICE_ACCOUNT = ("kube-system", "ebs-csi-controller-sa")
VPC_CNI_SERVICE_ACCOUNT = ("kube-system", "aws-node")
LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT = ("kube-system", "aws-load-balancer-controller")


def service_trust_policy(service: str) -> PolicyDocument:
    """Lets one AWS service (eks.amazonaws.com, ec2.amazonaws.com...) assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def oidc_issuer_host(issuer_url: str) -> str:
    """IAM condition keys name the issuer without its scheme."""
    return issuer_url.removeprefix("https://")


def irsa_trust_policy(
    provider_arn: str, issuer_url: str, namespace: str, service_account: str
) -> PolicyDocument:
    """Lets exactly one Kubernetes service account assume the role (IAM roles for SAs)."""
    issuer = oidc_issuer_host(issuer_url)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                        f"{issuer}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def bucket_access_policy(bucket_arn: str) -> PolicyDocument:
    """What the control service needs on its data store: objects and multipart uploads in
    this one bucket, nothing account-wide and no bucket configuration changes."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheDataStore",
                "Effect": "Allow",
                "Action": [
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:ListBucketMultipartUploads",
                ],
                "Resource": bucket_arn,
            },
            {
                "Sid": "ReadWriteDataStoreObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": f"{bucket_arn}/*",
            },
        ],
    }


def image_builder_policy(
    push_repository_arns: list[str],
    pull_repository_arns: list[str],
    bucket_arn: str,
    *,
    context_prefix: str,
) -> PolicyDocument:
    """What an in-cluster image build needs: read build contexts (only under the context
    prefix of the data store, never users' data), pull the runtime base images, push the
    step image and its layer cache. Tags of the step repository are immutable, so a build
    can add an image but never replace another step's."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RegistryLogin",
                "Effect": "Allow",
                # GetAuthorizationToken has no resource-level permissions.
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "PullRuntimeImages",
                "Effect": "Allow",
                "Action": ECR_PULL_ACTIONS,
                "Resource": pull_repository_arns,
            },
            {
                "Sid": "PushStepImages",
                "Effect": "Allow",
                "Action": ECR_PUSH_ACTIONS,
                "Resource": push_repository_arns,
            },
            {
                "Sid": "ReadBuildContexts",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{bucket_arn}/{context_prefix}*",
            },
        ],
    }


def deny_insecure_transport_policy(bucket_arn: str) -> PolicyDocument:
    """Refuses any request to the bucket that is not made over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def cluster_autoscaler_policy(cluster_name: str) -> PolicyDocument:
    """Read everything it needs to simulate node groups; resize only this cluster's groups.

    EKS tags the Auto Scaling groups of its managed node groups with
    `k8s.io/cluster-autoscaler/<cluster>=owned`, which scopes the write actions.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DescribeNodeGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    # Labels and taints of a managed node group at zero nodes come from here.
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ResizeThisClustersNodeGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"
                    }
                },
            },
        ],
    }


def ecr_lifecycle_policy(untagged_days: int, *, keep_images: int | None = None) -> PolicyDocument:
    """Expire untagged images (layers of superseded pushes) after `untagged_days`; with
    `keep_images`, also keep only the newest that many tagged images.

    Never give a count rule to a repository whose tagged images may still be in use (step
    images, runtime images): past the count, steps in use would fail to pull.
    """
    rules: list[dict[str, Any]] = [
        {
            "rulePriority": 1,
            "description": f"Expire untagged images after {untagged_days} days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": untagged_days,
            },
            "action": {"type": "expire"},
        }
    ]
    if keep_images is not None:
        # ECR evaluates the `any` rule last only if it has the highest priority number.
        rules.append(
            {
                "rulePriority": 2,
                "description": f"Keep the newest {keep_images} images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_images,
                },
                "action": {"type": "expire"},
            }
        )
    return {"rules": rules}


def load_balancer_controller_policy() -> PolicyDocument:
    """What the AWS Load Balancer Controller needs to run Network Load Balancers for
    Services: read the VPC, and change only the load balancers, target groups and security
    groups it created (which it tags `elbv2.k8s.aws/cluster`). No ALB, WAF, Shield or
    Cognito rights: Gristmill only asks it for NLBs."""
    owned = {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeAccountAttributes",
                    "ec2:DescribeAddresses",
                    "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeInternetGateways",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeTags",
                    "ec2:DescribeRouteTables",
                    "ec2:GetSecurityGroupsForVpc",
                    "elasticloadbalancing:DescribeLoadBalancers",
                    "elasticloadbalancing:DescribeLoadBalancerAttributes",
                    "elasticloadbalancing:DescribeListeners",
                    "elasticloadbalancing:DescribeListenerAttributes",
                    "elasticloadbalancing:DescribeListenerCertificates",
                    "elasticloadbalancing:DescribeSSLPolicies",
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetGroupAttributes",
                    "elasticloadbalancing:DescribeTargetHealth",
                    "elasticloadbalancing:DescribeTags",
                    "acm:ListCertificates",
                    "acm:DescribeCertificate",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
                },
            },
            {
                "Sid": "CreateTaggedSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
                           "ec2:RevokeSecurityGroupIngress"],
                "Resource": "*",
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": {
                    "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"},
                    "Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"},
                },
            },
            {
                "Sid": "ChangeOwnSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags", "ec2:DeleteSecurityGroup"],
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}},
            },
            {
                "Sid": "CreateTaggedLoadBalancers",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateLoadBalancer",
                    "elasticloadbalancing:CreateTargetGroup",
                ],
                "Resource": "*",
                "Condition": {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}},
            },
            {
                "Sid": "TagLoadBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                "Resource": [
                    "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*",
                    "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
                    "arn:aws:elasticloadbalancing:*:*:listener/net/*/*/*",
                ],
            },
            {
                "Sid": "ChangeOwnLoadBalancers",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:ModifyLoadBalancerAttributes",
                    "elasticloadbalancing:SetIpAddressType",
                    "elasticloadbalancing:SetSecurityGroups",
                    "elasticloadbalancing:SetSubnets",
                    "elasticloadbalancing:DeleteLoadBalancer",
                    "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:RegisterTargets",
                    "elasticloadbalancing:DeregisterTargets",
                ],
                "Resource": "*",
                "Condition": owned,
            },
            {
                "Sid": "Listeners",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:ModifyListenerAttributes",
                    "elasticloadbalancing:AddListenerCertificates",
                    "elasticloadbalancing:RemoveListenerCertificates",
                ],
                "Resource": "*",
            },
        ],
    }
