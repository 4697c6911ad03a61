"""Shared fixtures: a real control service on 127.0.0.1, on SQLite and (when reachable)
PostgreSQL, with a fresh data directory."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

POSTGRES_URL = os.environ.get(
    "GRISTMILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_admin_url() -> str | None:
    """The server URL if PostgreSQL answers, else None."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True):
            return POSTGRES_URL
    except Exception:
        return None


@dataclass
class DatabaseUnderTest:
    kind: str
    url: str


def _create_postgres_database(admin_url: str) -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"gristmill_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def _drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def own_database(kind: str, folder: Path) -> Iterator[DatabaseUnderTest]:
    """A new, empty database: the session's shared one, and one for tests that must not
    share it (they add users, and the shared one's first user must be the environment's
    admin). The PostgreSQL kind is skipped without a reachable server."""
    if kind == "sqlite":
        yield DatabaseUnderTest("sqlite", f"sqlite:///{folder / 'gristmill.sqlite3'}")
        return
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} "
                    "(set GRISTMILL_TEST_POSTGRES_URL); PostgreSQL variant skipped")
    name, url = _create_postgres_database(admin_url)
    try:
        yield DatabaseUnderTest("postgres", url)
    finally:
        _drop_postgres_database(admin_url, name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[str]:
    """A migrated database of the test module's own, on each backend: for tests that add
    users or count statements, which the session's shared database would disturb (or be
    disturbed by)."""
    from gristmill_platform.db import migrate

    with own_database(request.param, tmp_path_factory.mktemp("own-database")) as db:
        migrate.upgrade(db.url)
        yield db.url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[DatabaseUnderTest]:
    """Each database-backed test runs on SQLite and on PostgreSQL."""
    with own_database(request.param, tmp_path_factory.mktemp(request.param)) as database:
        yield database


@dataclass
class GristmillEnv:
    url: str
    sdk_token: str
    data_dir: Path
    database: DatabaseUnderTest
    settings: object

    def access_token(self) -> str:
        response = httpx.post(f"{self.url}/api/v1/auth/refresh",
                              json={"refresh_token": self.sdk_token})
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self) -> httpx.Client:
        """An httpx client authenticated as the admin."""
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.access_token()}"},
            timeout=60,
        )


class ServerThread:
    def __init__(self, settings: object) -> None:
        import uvicorn

        from gristmill_platform.server import uvicorn_config

        self.server = uvicorn.Server(uvicorn_config(settings))  # type: ignore[arg-type]
        self.server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, url: str) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("control service did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_environment(data_dir: Path, database_url: str, **overrides: object
                      ) -> tuple[ServerThread, GristmillEnv, object]:
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    port = free_port()
    settings = resolve_settings(Settings(data_dir=data_dir, host="127.0.0.1", port=port,
                                         database_url=database_url, log_level="warning",
                                         **overrides))  # type: ignore[arg-type]
    boot = prepare_environment(settings)
    token = boot.sdk_token
    if token is None:  # a restarted environment: mint a fresh admin token
        token = mint_admin_token(settings)
    server = ServerThread(settings)
    env = GristmillEnv(url=settings.environment_url, sdk_token=token, data_dir=data_dir,
                       database=DatabaseUnderTest("?", database_url), settings=settings)
    server.start(env.url)
    return server, env, settings


def mint_admin_token(settings: object) -> str:
    import asyncio

    from gristmill_platform.admin import AdminConsole

    async def mint() -> str:
        async with AdminConsole(settings) as console:  # type: ignore[arg-type]
            created = await console.create_token("admin@localhost", name="tests")
            return created.plaintext

    return asyncio.run(mint())


@pytest.fixture(scope="session")
def gristmill_env(database: DatabaseUnderTest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[GristmillEnv]:
    """A running environment, shared by the tests of a session (use unique names)."""
    data_dir = tmp_path_factory.mktemp(f"env-{database.kind}")
    # a small page size makes every client exercise continuation tokens
    server, env, _ = start_environment(data_dir, database.url, datastore_list_page_size=5)
    env.database = database
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def api(gristmill_env: GristmillEnv) -> Iterator[httpx.Client]:
    with gristmill_env.client() as client:
        yield client


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
