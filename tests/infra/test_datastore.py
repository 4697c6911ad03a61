from __future__ import annotations

import json

from gristmill_infra.datastore import DataStore, DataStoreArgs, cors_rules
from tests.infra.helpers import run_pulumi, stack_config
from tests.infra.mocks import OIDC_ISSUER, GristmillMocks

PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/oidc.example/id/X"


def build(**overrides: str) -> dict[str, str]:
    cfg = stack_config("dev", **overrides)

    def program() -> dict[str, object]:
        store = DataStore(
            "dev-datastore",
            DataStoreArgs(
                settings=cfg.datastore,
                environment="dev",
                oidc_provider_arn=PROVIDER_ARN,
                oidc_issuer_url=OIDC_ISSUER,
                namespace="gristmill",
                service_account="gristmill-control",
            ),
        )
        return {
            "bucket": store.bucket_name,
            "arn": store.bucket_arn,
            "role": store.control_role_arn,
        }

    result: dict[str, str] = run_pulumi(program)
    return result


def test_bucket_blocks_every_kind_of_public_access(mocks: GristmillMocks) -> None:
    build()
    block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert {
        k: block[k]
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    } == {
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    ownership = mocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_bucket_is_encrypted_versioned_and_tls_only(mocks: GristmillMocks) -> None:
    result = build()
    encryption = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "AES256"
    }
    versioning = mocks.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}
    policy = json.loads(mocks.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Resource"] == [result["arn"], f"{result['arn']}/*"]


def test_lifecycle_aborts_incomplete_uploads_and_expires_old_versions(
    mocks: GristmillMocks,
) -> None:
    build(datastoreAbortIncompleteUploadDays="3", datastoreNoncurrentVersionDays="60")
    rules = {
        r["id"]: r
        for r in mocks.one(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
        ).inputs["rules"]
    }
    assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": 3
    }
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {
        "noncurrentDays": 60
    }
    assert all(r["status"] == "Enabled" for r in rules.values())


def test_cors_allows_presigned_uploads_from_the_environment(mocks: GristmillMocks) -> None:
    build()
    (rule,) = mocks.one("aws:s3/bucketCorsConfiguration:BucketCorsConfiguration").inputs[
        "corsRules"
    ]
    assert rule["allowedOrigins"] == ["https://dev.ml.example.com"]
    assert set(rule["allowedMethods"]) == {"GET", "HEAD", "PUT", "POST"}
    assert rule["exposeHeaders"] == ["ETag"]


def test_no_cors_rules_when_no_origin_is_configured() -> None:
    assert cors_rules([]) == []


def test_control_service_role_is_scoped_to_this_bucket(mocks: GristmillMocks) -> None:
    result = build()
    role = mocks.one("aws:iam/role:Role", "control-service")
    assert result["role"] == role.state["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Federated": PROVIDER_ARN}
    assert (
        "system:serviceaccount:gristmill:gristmill-control"
        in trust["Condition"]["StringEquals"].values()
    )
    policy = json.loads(mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    resources = {s["Resource"] for s in policy["Statement"]}
    assert resources == {result["arn"], f"{result['arn']}/*"}


def test_bucket_survives_destroy_unless_asked(mocks: GristmillMocks) -> None:
    result = build(datastoreForceDestroy="false")
    bucket = mocks.one("aws:s3/bucket:Bucket").inputs
    assert bucket["forceDestroy"] is False
    assert bucket["bucketPrefix"] == "gristmill-dev-data-"
    assert result["bucket"].startswith("gristmill-dev-data-")
