"""Two real control service processes on one PostgreSQL database: a periodic deployment
fires exactly once per fire time; the schedule survives restarts; missed fire times while
down give one catch-up execution, not a burst."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from tests.conftest import (
    _create_postgres_database,
    _drop_postgres_database,
    _postgres_admin_url,
    free_port,
)
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder

CODE = 'def tick(text: str) -> dict:\n    return {"text": text}\n'


def serve(data_dir: Path, database_url: str, port: int,
          settings: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GRISTMILL_SCHEDULER_TICK_S": "0.02", "GRISTMILL_LOG_LEVEL": "warning",
           **(settings or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "gristmill.cli", "serve", "--data-dir", str(data_dir),
         "--port", str(port), "--database-url", database_url], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "control service exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("control service did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)


async def _db(url: str, action):  # noqa: ANN001, ANN202
    from gristmill_platform.db.engine import create_engine, create_session_factory

    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            return await action(session)
    finally:
        await engine.dispose()


def make_due(url: str, name: str, *, ago: timedelta = timedelta(0)) -> None:
    from gristmill_platform.db.models.deployments import Deployment
    from gristmill_platform.db.types import utcnow

    async def action(session):  # noqa: ANN001, ANN202
        await session.execute(update(Deployment).where(Deployment.name == name)
                              .values(next_fire_at=utcnow() - ago))

    asyncio.run(_db(url, action))


def next_fire(url: str, name: str):  # noqa: ANN201
    from gristmill_platform.db.models.deployments import Deployment

    async def action(session):  # noqa: ANN001, ANN202
        return (await session.execute(select(Deployment.next_fire_at)
                                      .where(Deployment.name == name))).scalar_one()

    return asyncio.run(_db(url, action))


def count(url: str, name: str) -> int:
    from gristmill_platform.db.models.executions import Execution

    async def action(session):  # noqa: ANN001, ANN202
        return (await session.execute(select(func.count()).select_from(Execution)
                                      .where(Execution.deployment_name == name))).scalar_one()

    return int(asyncio.run(_db(url, action)))


def wait_fired(url: str, name: str) -> None:
    from gristmill_platform.db.types import utcnow

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if next_fire(url, name) > utcnow():
            return
        time.sleep(0.02)
    raise AssertionError("nobody fired")


@pytest.fixture
def replicas(tmp_path):
    admin = _postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL not reachable: the two-replica scheduler test needs it")
    name, url = _create_postgres_database(admin)
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    data_dir = tmp_path / "shared"
    settings = resolve_settings(Settings(data_dir=data_dir, database_url=url))
    token = prepare_environment(settings).sdk_token
    try:
        yield data_dir, url, token
    finally:
        _drop_postgres_database(admin, name)


def test_two_replicas_fire_each_time_once_and_restarts_keep_the_schedule(replicas, tmp_path
                                                                         ) -> None:
    data_dir, url, token = replicas
    ports = [free_port(), free_port()]
    processes = [serve(data_dir, url, port) for port in ports]
    try:
        base = f"http://127.0.0.1:{ports[0]}"
        access = httpx.post(f"{base}/api/v1/auth/refresh",
                            json={"refresh_token": token}).json()["access_token"]
        api = httpx.Client(base_url=f"{base}/api/v1", timeout=60,
                           headers={"Authorization": f"Bearer {access}"})
        archive = archive_of(write_folder(tmp_path / "code", {"main.py": CODE}))
        created = post_step(api, step_form("ticker", function_path="main.py",
                                           function_name="tick",
                                           inputs=[{"name": "text", "data_type": "string"}],
                                           outputs=[{"name": "text", "data_type": "string"}],
                                           name_field="pipeline_name"),
                            archive, route="/pipelines")
        assert created.status_code == 201, created.text
        response = api.post("/periodic-deployment", json={
            "pipeline_name": "ticker", "name": "every-hour", "mode": "elastic",
            "schedule": "0 * * * *",
            "inputs_mapping": [{"pipeline_input_name": "text", "constant_value": "t"}],
            "outputs_mapping": [{"pipeline_output_name": "text", "is_null": True}]})
        assert response.status_code == 201, response.text

        rounds = 8
        for _ in range(rounds):
            make_due(url, "every-hour")
            wait_fired(url, "every-hour")
        time.sleep(0.5)  # a double fire would have happened by now
        assert count(url, "every-hour") == rounds

        # down, with three hourly fire times missed: one catch-up execution, then on time
        for process in processes:
            stop(process)
        processes = []
        scheduled = next_fire(url, "every-hour")
        make_due(url, "every-hour", ago=timedelta(hours=3))
        processes = [serve(data_dir, url, ports[0])]
        wait_fired(url, "every-hour")
        time.sleep(0.5)
        assert count(url, "every-hour") == rounds + 1
        assert next_fire(url, "every-hour") >= scheduled
    finally:
        for process in processes:
            stop(process)
