"""Building the S3 backend's clients from settings (checked once, at startup)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gristmill_platform.settings import Settings

# boto3's default pool (10) is smaller than what one control service asks of it: parallel
# requests from the API plus the transfer threads of execution files (10 per transfer).
MAX_POOL_CONNECTIONS = 50


class S3SettingsError(ValueError):
    """A startup error naming the GRISTMILL_* variable to fix."""


@dataclass(frozen=True)
class S3Options:
    bucket: str
    prefix: str
    region: str | None
    endpoint_url: str | None
    public_endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    addressing_style: str

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        if not settings.s3_bucket:
            raise S3SettingsError(
                "GRISTMILL_DATASTORE_BACKEND=s3 needs a bucket: set GRISTMILL_S3_BUCKET")
        secret = (settings.s3_secret_access_key.get_secret_value()
                  if settings.s3_secret_access_key else None)
        if bool(settings.s3_access_key_id) != bool(secret):
            raise S3SettingsError(
                "Set both GRISTMILL_S3_ACCESS_KEY_ID and GRISTMILL_S3_SECRET_ACCESS_KEY, or "
                "neither (to use boto3's credential chain, e.g. IRSA)")
        return cls(
            bucket=settings.s3_bucket,
            prefix=normalize_prefix(settings.s3_prefix),
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url or None,
            public_endpoint_url=settings.s3_public_endpoint_url or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=secret,
            addressing_style=settings.s3_addressing_style,
        )


def normalize_prefix(prefix: str) -> str:
    """'' or 'a/b/': keys are the prefix followed by the object path."""
    stripped = prefix.strip("/")
    if stripped and any(segment in ("", ".", "..") for segment in stripped.split("/")):
        raise S3SettingsError(
            f"GRISTMILL_S3_PREFIX {prefix!r} has an empty, '.' or '..' segment")
    return f"{stripped}/" if stripped else ""


def make_clients(options: S3Options) -> tuple[Any, Any]:
    """(client, presign_client): the first makes the control service's own calls through
    the internal endpoint; the second makes no call at all, it only signs the URLs handed
    to users and steps, for the endpoint they reach. Both share one credential provider,
    so refreshed credentials (IRSA) reach both. botocore clients are thread-safe: they are
    built once and shared by every request and worker thread."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        region_name=options.region,
    )
    # Presigned URLs must name the bucket's own region, or AWS answers them with a
    # redirect the SDKs do not follow for POST; us-east-1 is boto3's own fallback.
    region = options.region or session.region_name or "us-east-1"
    style = options.addressing_style
    if style == "auto":
        style = "path" if options.endpoint_url else "virtual"
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": style},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"mode": "standard"},
    )
    client = session.client("s3", region_name=region, endpoint_url=options.endpoint_url,
                            config=config)
    public_endpoint = options.public_endpoint_url or options.endpoint_url
    presign_client = session.client("s3", region_name=region, endpoint_url=public_endpoint,
                                    config=config)
    return client, presign_client
