"""One environment per data store backend, shared by the conformance tests: the local
backend and S3 (a moto server on 127.0.0.1). Every test taking ``store`` runs on both."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GristmillEnv, free_port, start_environment

# A small page: every listing crosses several pages (and the internal range) here.
PAGE_SIZE = 3
FAKE_KEYS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}
REGION = "eu-west-3"


@dataclass
class Moto:
    url: str

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"gristmill-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        return name

    def s3_settings(self, bucket: str, **extra: object) -> dict[str, object]:
        return {"datastore_backend": "s3", "s3_bucket": bucket, "s3_region": REGION,
                "s3_endpoint_url": self.url, **FAKE_KEYS, **extra}


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    """A moto S3 server on a free port, with no AWS credentials or config of the machine's
    in the environment meanwhile (fake credentials come from the settings)."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/gristmill-tests")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/gristmill-tests")
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield Moto(url=f"http://127.0.0.1:{port}")
        finally:
            server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    with moto_server() as server:
        yield server


@dataclass
class Store:
    kind: str
    env: GristmillEnv
    settings: Any
    bucket: str | None = None

    def put_internal(self, path: str, data: bytes, scratch: Path) -> None:
        """Write an object the way the platform writes its own files (step archives,
        execution files): through the backend, not the user routes that refuse them."""
        from gristmill_platform.app import build_state
        from gristmill_platform.deps import transaction

        source = scratch / "internal.bin"
        source.write_bytes(data)

        async def put() -> None:
            state = build_state(self.settings)
            try:
                async with transaction(state) as session:
                    await state.datastore(session).upload_from(source, path)
            finally:
                await state.engine.dispose()

        asyncio.run(put())


def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'gristmill.sqlite3'}"


def launch(tmp_path_factory: pytest.TempPathFactory, kind: str, **overrides: object
           ) -> tuple[Any, Store]:
    server, env, settings = start_environment(
        tmp_path_factory.mktemp(f"ds-{kind}"), sqlite_url(tmp_path_factory),
        datastore_list_page_size=PAGE_SIZE, **overrides)
    return server, Store(kind=kind, env=env, settings=settings,
                         bucket=overrides.get("s3_bucket"))  # type: ignore[arg-type]


class Stores:
    """The environments, started on first use and shared by the whole session."""

    def __init__(self, request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> None:
        self.request = request
        self.tmp_path_factory = tmp_path_factory
        self.started: dict[str, tuple[Any, Store]] = {}

    def get(self, kind: str) -> Store:
        if kind not in self.started:
            if kind == "local":
                self.started[kind] = launch(self.tmp_path_factory, "local")
            else:
                moto: Moto = self.request.getfixturevalue("moto")
                # a prefix, so these tests also show that keys stay under it
                self.started[kind] = launch(
                    self.tmp_path_factory, "s3",
                    **moto.s3_settings(moto.new_bucket(), s3_prefix="env-a/"))
        return self.started[kind][1]

    def stop(self) -> None:
        for server, _ in self.started.values():
            server.stop()


@pytest.fixture(scope="session")
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Stores]:
    started = Stores(request, tmp_path_factory)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session", params=["local", "s3"])
def store(request: pytest.FixtureRequest, stores: Stores) -> Store:
    """Tests taking this run once per backend."""
    return stores.get(request.param)


@pytest.fixture(scope="session")
def s3_store(stores: Stores) -> Store:
    return stores.get("s3")


@pytest.fixture
def s3_api(s3_store: Store) -> Iterator[httpx.Client]:
    with s3_store.env.client() as client:
        yield client


@pytest.fixture
def api(store: Store) -> Iterator[httpx.Client]:
    with store.env.client() as client:
        yield client


@pytest.fixture
def craft_sdk(store: Store, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real craft-ai-sdk 0.50.1 client. Its multipart sizes are set on the instance
    (not through the variables it reads once at import), so whichever test package imports
    it first, uploads above 6 MiB go multipart here, in parts S3 accepts (5 MiB)."""
    for name in ("CRAFT_AI_SDK_TOKEN", "CRAFT_AI_ENVIRONMENT_URL", "CRAFT_AI_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    from craft_ai_sdk import CraftAiSdk

    sdk = CraftAiSdk(sdk_token=store.env.sdk_token, environment_url=store.env.url,
                     control_url=store.env.url, verbose_log=False)
    sdk._MULTIPART_THRESHOLD = 6 * 1024 * 1024
    sdk._MULTIPART_PART_SIZE = 5 * 1024 * 1024
    return sdk
