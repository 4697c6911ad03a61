"""A database made by the first release, filled with data at every revision the way that
release would have written it, upgraded to head on SQLite and PostgreSQL: every row is
still there and readable by the current models and services."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from gristmill.cli.app import app
from gristmill_platform.auth.tokens import hash_secret
from gristmill_platform.db import migrate
from gristmill_platform.db.models import load_all_models
from gristmill_platform.db.types import UTCDateTime
from gristmill_platform.db.urls import sync_url
from tests.platform.test_migrations import empty_database  # noqa: F401 (fixture)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
USER_ID = "00000000-0000-0000-0000-000000000001"
STEP_ID = "00000000-0000-0000-0000-0000000000a1"
PIPELINE_ID = "00000000-0000-0000-0000-0000000000b1"
DEPLOYMENT_ID = "00000000-0000-0000-0000-0000000000c1"
EXECUTION_ID = "old-pipeline-abc123"
TOKEN_SECRET = "an-old-sdk-token-secret"  # noqa: S105


def _table(name: str, *columns: str, times: tuple[str, ...] = ()) -> sa.TableClause:
    """A table as an old release saw it: only the columns it knew."""
    return sa.table(name, *(sa.column(c) for c in columns),
                    *(sa.column(c, UTCDateTime()) for c in times))


def _json(name: str) -> sa.ColumnClause[Any]:
    return sa.column(name, sa.JSON())


def _insert(engine: sa.Engine, table: sa.TableClause, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.insert(table).values(**values))


def _at_0001(engine: sa.Engine) -> None:
    _insert(engine, _table("users", "id", "name", "email", "is_admin",
                           times=("created_at", "updated_at")),
            id=USER_ID, name="Old Admin", email="old@example.com", is_admin=True,
            created_at=NOW, updated_at=NOW)
    _insert(engine, _table("sdk_tokens", "id", "user_id", "name", "secret_hash", "scope",
                           "execution_id", times=("created_at",)),
            id="0123456789abcdef", user_id=USER_ID, name="laptop",
            secret_hash=hash_secret(TOKEN_SECRET), scope="user", execution_id=None,
            created_at=NOW)
    _insert(engine, _table("environment_variables", "name", "value",
                           times=("created_at", "updated_at")),
            name="API_KEY", value="old-value", created_at=NOW, updated_at=NOW)
    _insert(engine, _table("datastore_objects", "path", "blob", "size",
                           times=("last_modified",)),
            path="data/old.csv", blob="ab" * 16, size=42, last_modified=NOW)


def _at_0002(engine: sa.Engine) -> None:
    steps = sa.table("steps", *(sa.column(c) for c in (
        "id", "name", "function_path", "function_name", "origin", "status", "build_log",
        "environment_key", "timeout_s", "is_hidden")), _json("inputs"), _json("outputs"),
        _json("container_config"), sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()))
    _insert(engine, steps, id=STEP_ID, name="old-pipeline", function_path="src/steps.py",
            function_name="echo", origin="local", status="Ready", build_log="built",
            environment_key="k" * 16, timeout_s=3600, is_hidden=True,
            inputs=[{"name": "text", "data_type": "string"}],
            outputs=[{"name": "text", "data_type": "string"}],
            container_config={"language": "python:3.11"}, created_at=NOW, updated_at=NOW)
    _insert(engine, _table("pipelines", "id", "name", "step_id", "owns_step",
                           times=("created_at", "updated_at")),
            id=PIPELINE_ID, name="old-pipeline", step_id=STEP_ID, owns_step=True,
            created_at=NOW, updated_at=NOW)
    executions = sa.table("executions", *(sa.column(c) for c in (
        "id", "pipeline_id", "pipeline_name", "step_id", "step_name", "execution_rule",
        "status")), _json("inputs"), _json("outputs"),
        sa.column("created_at", UTCDateTime()), sa.column("ended_at", UTCDateTime()))
    _insert(engine, executions, id=EXECUTION_ID, pipeline_id=PIPELINE_ID,
            pipeline_name="old-pipeline", step_id=STEP_ID, step_name="old-pipeline",
            execution_rule="manual", status="Succeeded",
            inputs=[{"name": "text", "value": "hi"}], outputs=[{"name": "text", "value": "HI"}],
            created_at=NOW, ended_at=NOW)
    _insert(engine, _table("execution_logs", "execution_id", "seq", "stream", "message",
                           times=("timestamp",)),
            execution_id=EXECUTION_ID, seq=1, stream="stdout", message="echo hi",
            timestamp=NOW)
    _insert(engine, _table("metric_values", "execution_id", "name", "value", "pipeline_name",
                           times=("created_at",)),
            execution_id=EXECUTION_ID, name="accuracy", value=0.93,
            pipeline_name="old-pipeline", created_at=NOW)


def _at_0003(engine: sa.Engine) -> None:
    deployments = sa.table("deployments", *(sa.column(c) for c in (
        "id", "name", "pipeline_id", "pipeline_name", "execution_rule", "mode", "is_enabled",
        "status", "schedule", "enable_parallel_executions", "max_parallel_executions_per_pod",
        "timeout_s", "token_hash", "generation")), _json("inputs_mapping"),
        _json("outputs_mapping"), sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()), sa.column("next_fire_at", UTCDateTime()))
    _insert(engine, deployments, id=DEPLOYMENT_ID, name="old-nightly",
            pipeline_id=PIPELINE_ID, pipeline_name="old-pipeline", execution_rule="periodic",
            mode="elastic", is_enabled=True, status="up", schedule="0 3 * * *",
            enable_parallel_executions=False, max_parallel_executions_per_pod=1,
            timeout_s=3600, token_hash=None, generation=1, inputs_mapping=[],
            outputs_mapping=[], created_at=NOW, updated_at=NOW, next_fire_at=NOW)


def _at_0004(engine: sa.Engine) -> None:
    _insert(engine, _table("resource_samples", "sampled_at_ms", "worker", "kind",
                           "cpu_percent"),
            sampled_at_ms=1_767_000_000_000, worker="host", kind="node", cpu_percent=12.5)


# What each revision's release wrote; a new migration adds its own entry here when it
# changes how existing data is stored.
FILLERS = {"0001": _at_0001, "0002": _at_0002, "0003": _at_0003, "0004": _at_0004}


def test_a_first_release_database_upgrades_to_head_with_its_data(
        empty_database: str,  # noqa: F811 (the fixture imported above)
) -> None:
    url = empty_database
    engine = sa.create_engine(sync_url(url))
    try:
        for step in migrate.pending(url):
            migrate.upgrade(url, step.revision)
            if step.revision in FILLERS:
                FILLERS[step.revision](engine)
        assert migrate.pending(url) == []
        _check_with_current_models(engine)
    finally:
        engine.dispose()
    asyncio.run(_check_with_services(url))


def _check_with_current_models(engine: sa.Engine) -> None:
    load_all_models()
    from gristmill_platform.db.models.auth import SdkToken, User
    from gristmill_platform.db.models.datastore import DataStoreObject
    from gristmill_platform.db.models.deployments import Deployment
    from gristmill_platform.db.models.env_vars import EnvironmentVariable
    from gristmill_platform.db.models.executions import Execution
    from gristmill_platform.db.models.steps import Pipeline, Step

    with Session(engine) as session:
        user = session.get(User, USER_ID)
        assert user is not None and user.email == "old@example.com" and user.is_admin
        assert user.created_at == NOW
        token = session.get(SdkToken, "0123456789abcdef")
        assert token is not None and token.secret_hash == hash_secret(TOKEN_SECRET)
        variable = session.get(EnvironmentVariable, "API_KEY")
        assert variable is not None and variable.value == "old-value"
        obj = session.get(DataStoreObject, "data/old.csv")
        assert obj is not None and obj.size == 42 and obj.last_modified == NOW
        step = session.get(Step, STEP_ID)
        assert step is not None and step.container_config == {"language": "python:3.11"}
        assert step.image is None  # added by 0005, empty for local builds
        pipeline = session.get(Pipeline, PIPELINE_ID)
        assert pipeline is not None and pipeline.step_id == STEP_ID
        execution = session.get(Execution, EXECUTION_ID)
        assert execution is not None and execution.outputs == [{"name": "text", "value": "HI"}]
        deployment = session.get(Deployment, DEPLOYMENT_ID)
        assert deployment is not None and deployment.schedule == "0 3 * * *"
        assert deployment.next_fire_at == NOW
        # 0006: an old endpoint keeps its name as its path, and no execution timeout
        assert deployment.endpoint_url_path is None and deployment.execution_timeout_s is None


async def _check_with_services(url: str) -> None:
    """The old token authenticates through today's service."""
    from gristmill_platform.auth.repository import TokenRepository, UserRepository
    from gristmill_platform.auth.service import AuthService
    from gristmill_platform.db.engine import create_engine, create_session_factory

    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            auth = AuthService(UserRepository(session), TokenRepository(session),
                               signing_key="k" * 48, access_token_ttl_s=3600)
            issued = await auth.exchange(f"gm_0123456789abcdef_{TOKEN_SECRET}")
            principal = await auth.authenticate(issued.access_token)
            assert principal.user_id == USER_ID
    finally:
        await engine.dispose()


def test_db_upgrade_dry_run_lists_pending_migrations_and_writes_nothing(tmp_path) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "env"
    url = f"sqlite:///{data_dir / 'gristmill.sqlite3'}"
    data_dir.mkdir()
    migrate.upgrade(url, "0002")
    dry = runner.invoke(app, ["db", "upgrade", "--dry-run", "--data-dir", str(data_dir)])
    assert dry.exit_code == 0, dry.output
    listed = [line.split()[0] for line in dry.output.splitlines() if line.startswith("  ")]
    assert listed == [m.revision for m in migrate.pending(url)]
    assert listed[0] == "0003" and "0002" not in listed
    assert migrate.current_revision(url) == "0002"
    assert runner.invoke(app, ["db", "upgrade", "--data-dir", str(data_dir)]).exit_code == 0
    done = runner.invoke(app, ["db", "upgrade", "--dry-run", "--data-dir", str(data_dir)])
    assert "up to date" in done.output
