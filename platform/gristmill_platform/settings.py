"""Settings for one environment, read from arguments or ``GRISTMILL_*`` variables.

Nothing here touches the filesystem or the network at import; ``Settings.resolve`` fills in
the values derived from the data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".gristmill"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRISTMILL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # The URL users and workers reach this environment at; derived from host/port if unset.
    public_url: str | None = None
    database_url: str | None = None
    # Token signing key; when unset, one is generated once and kept in data_dir/secret.key.
    secret_key: str | None = None

    access_token_ttl_s: int = Field(default=3600, ge=60)
    sdk_token_default_ttl_days: int | None = None

    datastore_backend: Literal["local", "s3"] = "local"
    datastore_root: Path | None = None
    signed_url_ttl_s: int = Field(default=3600, ge=1)
    datastore_list_page_size: int = Field(default=1000, ge=1, le=10000)
    datastore_max_object_bytes: int = Field(default=5 * 1024**4, ge=1)
    datastore_max_path_length: int = Field(default=1024, ge=16)
    # S3 backend (datastore_backend="s3"). Unset credentials and region fall back to
    # boto3's chain (environment, IRSA web identity in EKS, instance profile).
    s3_bucket: str | None = None
    s3_region: str | None = None
    # For S3-compatible stores (MinIO, Ceph) and tests: where the control service itself
    # reaches the store.
    s3_endpoint_url: str | None = None
    # Where users and steps reach it, when that differs (MinIO seen as minio:9000 inside
    # the cluster and s3.example.com outside): handed-out URLs are signed for this host.
    s3_public_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    # Every object key lives under this prefix, so environments can share a bucket.
    s3_prefix: str = ""
    # "auto": path-style with a custom endpoint (MinIO needs it), virtual-hosted on AWS.
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"

    # Project defaults for steps (the documentation's "project settings"): used when a
    # step's container_config leaves a key out.
    step_default_language: str | None = None
    step_default_requirements_path: str | None = None
    step_default_repository_url: str | None = None
    step_default_repository_branch: str | None = None
    step_default_repository_deploy_key: str | None = None
    step_default_included_folders: list[str] = Field(default_factory=lambda: ["/"])
    step_default_system_dependencies: list[str] = Field(default_factory=list)
    # How long POST /steps waits for the build before answering 206 "still building".
    step_build_wait_s: float = Field(default=25.0, ge=0)

    executor: Literal["local", "kubernetes"] = "local"
    # how often each control service looks for periodic deployments that are due
    scheduler_tick_s: float = Field(default=1.0, gt=0)
    # Long-polls hold a request this long before answering "not yet" (307 / redirect).
    long_poll_s: float = Field(default=20.0, gt=0)

    # Resource metrics (GET /resource-metrics, docs/resource-metrics.md): "local" samples
    # this machine and its worker processes into the database; "prometheus" reads a
    # cluster's Prometheus (node exporter, cAdvisor, DCGM exporter). The infra stack sets
    # GRISTMILL_METRICS_BACKEND, accepted as a synonym.
    resource_metrics_backend: Literal["local", "prometheus"] = Field(
        default="local",
        validation_alias=AliasChoices("resource_metrics_backend",
                                      "GRISTMILL_RESOURCE_METRICS_BACKEND",
                                      "GRISTMILL_METRICS_BACKEND"))
    prometheus_url: str | None = None
    # Prometheus' scrape interval: the finest step answered, and rates span >= 4 of them.
    prometheus_scrape_interval_s: float = Field(default=30.0, gt=0)
    prometheus_timeout_s: float = Field(default=15.0, gt=0)
    # Embedded sampler: how often the host and each worker process are read, how long the
    # samples are kept.
    resource_sample_interval_s: float = Field(default=5.0, gt=0)
    resource_retention_h: float = Field(default=24.0, gt=0)

    log_level: str = "info"

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    def resolve(self) -> Settings:
        """Return a copy with every derived default filled in."""
        data_dir = self.data_dir.expanduser().resolve()
        host_for_url = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return self.model_copy(
            update={
                "data_dir": data_dir,
                "public_url": self.public_url or f"http://{host_for_url}:{self.port}",
                "database_url": self.database_url
                or f"sqlite+aiosqlite:///{data_dir / 'gristmill.sqlite3'}",
                "datastore_root": (self.datastore_root or data_dir / "datastore").expanduser(),
            }
        )

    @property
    def environment_url(self) -> str:
        assert self.public_url is not None, "call Settings.resolve() first"
        return self.public_url


def resolve_settings(settings: Settings) -> Settings:
    """Derived values plus the signing key (generated once into the data dir if unset)."""
    from gristmill_platform.secrets_store import load_or_create_secret_key

    resolved = settings.resolve()
    if not resolved.secret_key:
        resolved = resolved.model_copy(
            update={"secret_key": load_or_create_secret_key(resolved.data_dir)}
        )
    return resolved
