"""First start of an environment: schema migrations, the admin user, its credentials."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService
from gristmill_platform.db import migrate
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.settings import Settings


@dataclass(frozen=True)
class Bootstrap:
    environment_url: str
    admin_email: str | None
    sdk_token: str | None  # only on first start: it is stored hashed and cannot be shown again
    credentials_file: Path | None


def export_lines(environment_url: str, sdk_token: str) -> list[str]:
    return [
        f"export GRISTMILL_ENVIRONMENT_URL={environment_url}",
        f"export GRISTMILL_SDK_TOKEN={sdk_token}",
        f"export CRAFT_AI_ENVIRONMENT_URL={environment_url}",
        f"export CRAFT_AI_CONTROL_URL={environment_url}",
        f"export CRAFT_AI_SDK_TOKEN={sdk_token}",
    ]


def write_credentials(data_dir: Path, environment_url: str, sdk_token: str) -> Path:
    """Keep the first token in a 0600 file, like ~/.aws/credentials, so scripts can
    source it; the database itself only holds its hash."""
    path = data_dir / "credentials.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(export_lines(environment_url, sdk_token)) + "\n")
    return path


ENVIRONMENT_URL_FILE = "environment-url"


def record_environment_url(data_dir: Path, environment_url: str) -> None:
    """Note where the environment serves, at every start: commands that administer the
    data directory (`gristmill token create`) print that URL, not one derived from
    their own defaults."""
    (data_dir / ENVIRONMENT_URL_FILE).write_text(environment_url + "\n")


def recorded_environment_url(data_dir: Path) -> str | None:
    try:
        return (data_dir / ENVIRONMENT_URL_FILE).read_text().strip() or None
    except OSError:
        return None


async def _ensure_admin(settings: Settings) -> tuple[str | None, str | None]:
    assert settings.database_url and settings.secret_key
    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            auth = AuthService(UserRepository(session), TokenRepository(session),
                               signing_key=settings.secret_key,
                               access_token_ttl_s=settings.access_token_ttl_s)
            created = await auth.bootstrap_admin()
            if created is None:
                return None, None
            user = await auth.get_user(created.token.user_id)
            return user.email, created.plaintext
    finally:
        await engine.dispose()


def prepare_environment(settings: Settings) -> Bootstrap:
    """Idempotent: safe on every start. Returns the admin's token only the first time."""
    assert settings.database_url and settings.public_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    email, token = asyncio.run(_ensure_admin(settings))
    record_environment_url(settings.data_dir, settings.environment_url)
    credentials = (
        write_credentials(settings.data_dir, settings.environment_url, token) if token else None
    )
    return Bootstrap(settings.environment_url, email, token, credentials)
