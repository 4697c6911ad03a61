from __future__ import annotations

from gristmill_infra.kubeconfig import build_kubeconfig
from gristmill_infra.policies import (
    bucket_access_policy,
    cluster_autoscaler_policy,
    deny_insecure_transport_policy,
    ecr_lifecycle_policy,
    irsa_trust_policy,
    service_trust_policy,
)

ISSUER_HOST = "oidc.eks.eu-west-3.amazonaws.com/id/ABC"
PROVIDER = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-3.amazonaws.com/id/ABC"
ISSUER = "https://oidc.eks.eu-west-3.amazonaws.com/id/ABC"
BUCKET = "arn:aws:s3:::gristmill-dev-data-abc"


def test_irsa_trust_admits_only_one_service_account() -> None:
    (statement,) = irsa_trust_policy(PROVIDER, ISSUER, "gristmill", "gristmill-control")[
        "Statement"
    ]
    assert statement["Principal"] == {"Federated": PROVIDER}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER_HOST}:sub": "system:serviceaccount:gristmill:gristmill-control",
            f"{ISSUER_HOST}:aud": "sts.amazonaws.com",
        }
    }


def test_service_trust_names_the_service() -> None:
    (statement,) = service_trust_policy("eks.amazonaws.com")["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "eks.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }


def test_bucket_access_is_limited_to_the_bucket_and_its_objects() -> None:
    statements = bucket_access_policy(BUCKET)["Statement"]
    resources = {s["Resource"] for s in statements}
    assert resources == {BUCKET, f"{BUCKET}/*"}
    actions = {a for s in statements for a in s["Action"]}
    assert all(s["Effect"] == "Allow" for s in statements)
    assert "s3:*" not in actions
    assert not any(
        a.startswith(("s3:PutBucket", "s3:DeleteBucket", "iam:", "kms:")) for a in actions
    )
    assert {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"} <= actions


def test_insecure_transport_is_denied() -> None:
    (statement,) = deny_insecure_transport_policy(BUCKET)["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Resource"] == [BUCKET, f"{BUCKET}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_cluster_autoscaler_resizes_only_its_own_cluster() -> None:
    describe, resize = cluster_autoscaler_policy("gristmill-dev")["Statement"]
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in describe["Action"])
    assert "eks:DescribeNodegroup" in describe["Action"]
    assert set(resize["Action"]) == {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    }
    assert resize["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/gristmill-dev": "owned"}
    }


def test_ecr_lifecycle_expires_untagged_first_and_keeps_the_newest() -> None:
    untagged, keep = ecr_lifecycle_policy(keep_images=150, untagged_days=5)["rules"]
    assert (untagged["rulePriority"], keep["rulePriority"]) == (1, 2)
    assert untagged["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 5,
    }
    assert keep["selection"] == {
        "tagStatus": "any",
        "countType": "imageCountMoreThan",
        "countNumber": 150,
    }


def test_kubeconfig_gets_tokens_from_the_aws_cli() -> None:
    config = build_kubeconfig("gristmill-dev", "https://api.example", "Q0E=", "eu-west-3")
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {
        "server": "https://api.example",
        "certificate-authority-data": "Q0E=",
    }
    (user,) = config["users"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"][:4] == ["eks", "get-token", "--cluster-name", "gristmill-dev"]
    assert exec_["args"][4:6] == ["--region", "eu-west-3"]
    assert "token" not in user["user"]
    assert config["current-context"] == "gristmill-dev"
