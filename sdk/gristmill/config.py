"""Client settings: explicit arguments win, then ``GRISTMILL_*`` variables, then the
``CRAFT_AI_*`` ones that craft-ai-sdk users already have set.

Everything is read when a client is built (not at import), so a notebook can change
``os.environ`` and build a new client without restarting the kernel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

ENVIRONMENT_URL_VARS = ("GRISTMILL_ENVIRONMENT_URL", "CRAFT_AI_ENVIRONMENT_URL")
SDK_TOKEN_VARS = ("GRISTMILL_SDK_TOKEN", "CRAFT_AI_SDK_TOKEN")
CONTROL_URL_VARS = ("GRISTMILL_CONTROL_URL", "CRAFT_AI_CONTROL_URL")
PROGRESS_VARS = ("GRISTMILL_PROGRESS",)
TIMEOUT_VARS = ("GRISTMILL_TIMEOUT_S",)
MAX_RETRIES_VARS = ("GRISTMILL_MAX_RETRIES",)
# craft-ai-sdk spells these with double underscores; both spellings are honoured.
MULTIPART_THRESHOLD_VARS = (
    "GRISTMILL_MULTIPART_THRESHOLD_B",
    "CRAFT_AI__MULTIPART_THRESHOLD__B",
)
MULTIPART_PART_SIZE_VARS = (
    "GRISTMILL_MULTIPART_PART_SIZE_B",
    "CRAFT_AI__MULTIPART_PART_SIZE__B",
)

# Threshold as craft-ai-sdk 0.50.1 (S3 recommends multipart from ~100 MB). The part size
# is larger than craft-ai-sdk's 9.5 MiB: every part costs a presign round trip and a
# commit on the platform, and 64 MiB parts doubled the upload throughput in
# bench/datastore.py; parts are streamed, so memory does not grow with it. It stays a
# multiple of 256 KiB (GCS) and lets S3's 10,000 parts reach 640 GiB (95 GiB at 9.5 MiB).
DEFAULT_MULTIPART_THRESHOLD_B = 100_000_000
DEFAULT_MULTIPART_PART_SIZE_B = 256 * 256 * 1024
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


@dataclass(frozen=True)
class Settings:
    """Resolved client settings. ``progress=None`` means "only when attached to a terminal
    or a notebook"."""

    environment_url: str
    sdk_token: str
    control_url: str
    progress: bool | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD_B
    multipart_part_size: int = DEFAULT_MULTIPART_PART_SIZE_B

    def __repr__(self) -> str:
        # The SDK token is a long-lived credential: keep it out of reprs, logs and tracebacks.
        return (
            f"Settings(environment_url={self.environment_url!r}, sdk_token='***', "
            f"control_url={self.control_url!r}, progress={self.progress!r}, "
            f"timeout={self.timeout!r}, max_retries={self.max_retries!r}, "
            f"multipart_threshold={self.multipart_threshold!r}, "
            f"multipart_part_size={self.multipart_part_size!r})"
        )

    @property
    def environment_api_url(self) -> str:
        return f"{self.environment_url}/api/v1"

    @property
    def control_api_url(self) -> str:
        return f"{self.control_url}/api/v1"


def _first_env(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first variable that is set to a non-blank value, as (name, value)."""
    for name in names:
        value = env.get(name)
        if value is not None and value.strip():
            return name, value.strip()
    return None


def _normalise_url(value: str, what: str, source: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{what} from {source} must be an http(s) URL such as "
            f"'https://my-env.example.com', got {value!r}."
        )
    return url


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be a boolean such as 1/0 or true/false, got {value!r}.")


def _parse_positive_int(value: str, name: str, *, minimum: int) -> int:
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}.") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}.")
    return number


def _check_int(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


def resolve_settings(
    environment_url: str | None = None,
    sdk_token: str | None = None,
    control_url: str | None = None,
    *,
    progress: bool | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    multipart_threshold: int | None = None,
    multipart_part_size: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge arguments with environment variables; raise ``ValueError`` naming what to set."""
    env = os.environ if environ is None else environ

    if environment_url is not None and environment_url.strip():
        env_url = _normalise_url(environment_url, "environment_url", "the argument")
    else:
        found = _first_env(env, ENVIRONMENT_URL_VARS)
        if found is None:
            raise ValueError(
                "No environment URL: pass environment_url=... or set "
                f"{' or '.join(ENVIRONMENT_URL_VARS)} (e.g. 'https://my-env.example.com')."
            )
        env_url = _normalise_url(found[1], "The environment URL", found[0])

    if sdk_token is not None and sdk_token.strip():
        token = sdk_token.strip()
    else:
        found = _first_env(env, SDK_TOKEN_VARS)
        if found is None:
            raise ValueError(
                "No SDK token: pass sdk_token=... or set "
                f"{' or '.join(SDK_TOKEN_VARS)}. Your SDK token is in the platform "
                "settings, or printed by `gristmill up` for a local environment."
            )
        token = found[1]

    if control_url is not None and control_url.strip():
        ctl_url = _normalise_url(control_url, "control_url", "the argument")
    else:
        found = _first_env(env, CONTROL_URL_VARS)
        # A self-hosted environment serves its own auth routes; never fall back to a
        # vendor's SaaS, which would receive the user's token.
        ctl_url = (
            env_url if found is None else _normalise_url(found[1], "The control URL", found[0])
        )

    if progress is None:
        found = _first_env(env, PROGRESS_VARS)
        if found is not None:
            progress = parse_bool(found[1], found[0])

    timeout_source = "timeout"
    if timeout is None:
        found = _first_env(env, TIMEOUT_VARS)
        if found is None:
            timeout = DEFAULT_TIMEOUT_S
        else:
            timeout_source = found[0]
            try:
                timeout = float(found[1])
            except ValueError:
                raise ValueError(
                    f"{found[0]} must be a number of seconds, got {found[1]!r}."
                ) from None
    if timeout <= 0:
        raise ValueError(f"{timeout_source} must be a positive number of seconds, got {timeout}.")

    if max_retries is None:
        found = _first_env(env, MAX_RETRIES_VARS)
        max_retries = (
            DEFAULT_MAX_RETRIES
            if found is None
            else _parse_positive_int(found[1], found[0], minimum=0)
        )
    _check_int(max_retries, "max_retries", minimum=0)

    if multipart_threshold is None:
        found = _first_env(env, MULTIPART_THRESHOLD_VARS)
        multipart_threshold = (
            DEFAULT_MULTIPART_THRESHOLD_B
            if found is None
            else _parse_positive_int(found[1], found[0], minimum=1)
        )
    _check_int(multipart_threshold, "multipart_threshold", minimum=1)

    if multipart_part_size is None:
        found = _first_env(env, MULTIPART_PART_SIZE_VARS)
        multipart_part_size = (
            DEFAULT_MULTIPART_PART_SIZE_B
            if found is None
            else _parse_positive_int(found[1], found[0], minimum=1)
        )
    _check_int(multipart_part_size, "multipart_part_size", minimum=1)

    return Settings(
        environment_url=env_url,
        sdk_token=token,
        control_url=ctl_url,
        progress=progress,
        timeout=float(timeout),
        max_retries=max_retries,
        multipart_threshold=multipart_threshold,
        multipart_part_size=multipart_part_size,
    )
