from __future__ import annotations

import json

from gristmill_infra.policies import ecr_lifecycle_policy, image_builder_policy
from gristmill_infra.registry import (
    BUILD_CONTEXT_PREFIX,
    Registry,
    RegistryArgs,
    registry_url,
)
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import OIDC_ISSUER, GristmillMocks

HOST = "123456789012.dkr.ecr.eu-west-3.amazonaws.com"
BUCKET_ARN = "arn:aws:s3:::gristmill-dev-data-abc"


def build(**overrides: str) -> str:
    cfg = stack_config("dev", **overrides)
    url: str = run_pulumi(
        lambda: (
            Registry(
                "dev-registry",
                RegistryArgs(
                    settings=cfg.registry,
                    oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/x",
                    oidc_issuer_url=OIDC_ISSUER,
                    bucket_arn=BUCKET_ARN,
                    builder_namespace="gristmill-builds",
                    builder_service_account="gristmill-builder",
                ),
            ).url
        )
    )
    return url


def test_registry_url_is_the_host_and_namespace() -> None:
    assert (
        registry_url(f"{HOST}/gristmill/dev/gristmill-steps", "gristmill/dev")
        == f"{HOST}/gristmill/dev"
    )


def test_repositories_the_kubernetes_backend_uses(mocks: GristmillMocks) -> None:
    url = build()
    assert url == f"{HOST}/gristmill/dev"
    repositories = {r.inputs["name"] for r in mocks.of_type("aws:ecr/repository:Repository")}
    assert repositories == {
        "gristmill/dev/gristmill-runtime/python",
        "gristmill/dev/gristmill-runtime/python-cuda",
        "gristmill/dev/gristmill-steps",
        "gristmill/dev/gristmill-cache",
    }


def test_repositories_scan_on_push_and_expire(mocks: GristmillMocks) -> None:
    build(registryKeepImages="50")
    for repository in mocks.of_type("aws:ecr/repository:Repository"):
        assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repository.inputs["forceDelete"] is True
    policies = {
        p.name: json.loads(p.inputs["policy"])
        for p in mocks.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    }
    assert len(policies) == 4
    # Only the build cache is capped by count: a step or runtime image in use never expires.
    assert policies["dev-registry-gristmill-cache"] == ecr_lifecycle_policy(7, keep_images=50)
    for name in ("gristmill-steps", "gristmill-runtime-python", "gristmill-runtime-python-cuda"):
        rules = policies[f"dev-registry-{name}"]["rules"]
        assert [rule["selection"]["tagStatus"] for rule in rules] == ["untagged"]


def test_step_images_are_immutable_and_stateful_repositories_protected(
    mocks: GristmillMocks,
) -> None:
    build()
    mutability = {
        r.inputs["name"].split("/dev/")[1]: r.inputs["imageTagMutability"]
        for r in mocks.of_type("aws:ecr/repository:Repository")
    }
    assert mutability == {
        "gristmill-steps": "IMMUTABLE",
        "gristmill-cache": "MUTABLE",
        "gristmill-runtime/python": "MUTABLE",
        "gristmill-runtime/python-cuda": "MUTABLE",
    }


def test_the_builder_reads_exactly_where_the_control_service_writes_contexts() -> None:
    from gristmill_platform.steps.image_builds import context_object_path

    assert context_object_path("0" * 64).startswith(BUILD_CONTEXT_PREFIX)


def test_image_builds_push_only_step_images_and_read_only_the_bucket(mocks: GristmillMocks) -> None:
    build()
    role = mocks.one("aws:iam/role:Role", "image-builder")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:gristmill-builds:gristmill-builder" in trust.values()
    arns = {
        r.inputs["name"].split("/dev/")[1]: r.state["arn"]
        for r in mocks.of_type("aws:ecr/repository:Repository")
    }
    policy = json.loads(
        mocks.one("aws:iam/rolePolicy:RolePolicy", "image-builder").inputs["policy"]
    )
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["PushStepImages"]["Resource"] == [
        arns["gristmill-steps"],
        arns["gristmill-cache"],
    ]
    assert "ecr:PutImage" not in statements["PullRuntimeImages"]["Action"]
    assert statements["ReadBuildContexts"] == {
        "Sid": "ReadBuildContexts",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": f"{BUCKET_ARN}/.gristmill/builds/*",
    }


def test_builder_policy_grants_no_registry_administration() -> None:
    policy = image_builder_policy(
        ["arn:steps"], ["arn:runtime", "arn:steps"], BUCKET_ARN, context_prefix="builds/"
    )
    actions = [
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]
    assert not any(
        a.startswith(("ecr:Delete", "ecr:Set", "ecr:PutLifecycle", "iam:")) for a in actions
    )
    assert "ecr:*" not in actions
    (wildcard,) = [s for s in policy["Statement"] if s["Resource"] == "*"]
    assert wildcard["Action"] == "ecr:GetAuthorizationToken"
