"""An elastic run's `POST /run` records the execution and mints its token: two INSERTs
and no read (each statement is a hop to the database's thread, every run pays them). The
id is not looked up first (64 random bits; a collision fails the insert, it never
overwrites), the owner is not read again (just authenticated; the token row's foreign key
still refuses a user gone meanwhile), and the environment variables are read only when an
input is mapped (a mapping may name one)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gristmill_platform.auth.principal import Principal
from gristmill_platform.db.models.env_vars import EnvironmentVariable
from gristmill_platform.db.models.steps import Pipeline, Step
from gristmill_platform.executions.factory import ExecutionServices
from gristmill_platform.executions.repository import ExecutionRepository
from gristmill_platform.executions.service import RunRequest
from tests.platform.test_auth_round_trips import KEY, counted, new_user, run


@pytest.fixture(scope="module")
def database_url(database: Any) -> str:
    from gristmill_platform.db import migrate

    migrate.upgrade(database.url)
    return str(database.url)


def step_and_pipeline() -> tuple[Pipeline, Step]:
    # not persisted: recording an execution reads neither (the caller has them)
    step = Step(id=str(uuid.uuid4()), name="s", function_path="main.py",
                function_name="echo", inputs=[{"name": "text", "data_type": "string"}],
                outputs=[{"name": "text", "data_type": "string"}], origin="local",
                status="ready")
    return Pipeline(id=None, name="echo", step_id=step.id), step


def principal(user_id: str) -> Principal:
    return Principal(user_id=user_id, token_id="t", scope="user", execution_id=None,
                     is_admin=False)


def services() -> ExecutionServices:
    return ExecutionServices(lambda _session: None,  # type: ignore[arg-type,return-value]
                             signing_key=KEY, access_token_ttl_s=600)


def test_recording_a_run_given_its_values_is_two_inserts(database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        pipeline, step = step_and_pipeline()
        request = RunRequest(inputs={"text": "hi"}, files={}, inputs_mapping=[],
                             outputs_mapping=[])
        async with auth() as (_, session):
            with counted(engine) as statements:
                launch = await services()(session).create(pipeline, step, request,
                                                          principal(user_id))
        # one flush writes both, in the order the unit of work picks (no foreign key
        # orders them; one transaction)
        assert sorted(s.split()[0:3] for s in statements) == [
            ["INSERT", "INTO", "executions"], ["INSERT", "INTO", "sdk_tokens"]], statements
        async with auth() as (_, session):
            recorded = await ExecutionRepository(session).get(launch.execution_id)
            assert recorded is not None and recorded.inputs[0]["value"] == "hi"
            assert recorded.created_by == user_id

    run(database_url, scenario)


def test_a_mapped_input_reads_the_variables(database_url: str) -> None:
    name = f"V_{uuid.uuid4().hex[:8].upper()}"

    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (_, session):
            session.add(EnvironmentVariable(name=name, value="from-env"))
        pipeline, step = step_and_pipeline()
        request = RunRequest(inputs={}, files={}, outputs_mapping=[], inputs_mapping=[
            {"pipeline_input_name": "text", "environment_variable_name": name}])
        async with auth() as (_, session):
            with counted(engine) as statements:
                launch = await services()(session).create(pipeline, step, request,
                                                          principal(user_id))
        assert any("environment_variables" in s for s in statements), statements
        async with auth() as (_, session):
            recorded = await ExecutionRepository(session).get(launch.execution_id)
            assert recorded is not None and recorded.inputs[0]["value"] == "from-env"

    run(database_url, scenario)


def test_the_token_of_an_owner_deleted_meanwhile_is_refused(database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (service, _):
            await service.delete_user(user_id)
        with pytest.raises(IntegrityError):
            async with auth() as (service, _):
                await service.create_sdk_token(user_id, scope="execution",
                                               execution_id="e-gone", owner_checked=True)

    run(database_url, scenario)
