"""Authentication runs on every request (an elastic execution makes four: run, outputs,
the runner's start and finish), so its database round trips are counted here: one
statement to check an access token (the token and its user, joined), one to revoke an
execution's tokens. Revocation still takes effect on the very next request: nothing is
cached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gristmill_platform.auth.policy import kind_of
from gristmill_platform.auth.repository import TokenRepository, UserRepository
from gristmill_platform.auth.service import AuthService
from gristmill_platform.db.engine import create_engine, create_session_factory
from gristmill_platform.errors import Unauthorized
from gristmill_platform.executions.repository import ExecutionRepository

KEY = "k" * 32
T = TypeVar("T")


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent to the database while the block runs."""
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)


def run(own_database_url: str, scenario: Callable[[AsyncEngine, Any], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = create_engine(own_database_url)
        factory = create_session_factory(engine)

        @asynccontextmanager
        async def auth() -> AsyncIterator[tuple[AuthService, AsyncSession]]:
            async with factory() as session, session.begin():
                yield AuthService(UserRepository(session), TokenRepository(session),
                                  signing_key=KEY, access_token_ttl_s=600), session
        try:
            return await scenario(engine, auth)
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def new_user(auth: Any) -> str:
    async with auth() as (service, _):
        user = await service.create_user(name="u", email=f"{uuid.uuid4().hex}@example.com")
        return str(user.id)


def test_checking_an_access_token_is_one_statement(own_database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (service, _):
            created = await service.create_sdk_token(user_id, scope="execution",
                                                     execution_id="e-1")
            access = service.access_token_for(created.token).access_token
        async with auth() as (service, _):
            with counted(engine) as statements:
                principal = await service.authenticate(access)
        assert len(statements) == 1, statements
        assert "JOIN users" in statements[0]
        assert (principal.user_id, principal.token_id, principal.scope,
                principal.execution_id) == (user_id, created.token.id, "execution", "e-1")

    run(own_database_url, scenario)


def test_a_revoked_token_is_refused_at_once(own_database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (service, _):
            created = await service.create_sdk_token(user_id)
            access = service.access_token_for(created.token).access_token
        async with auth() as (service, _):
            await service.authenticate(access)
            await service.revoke_sdk_token(created.token.id)
        async with auth() as (service, _):
            with pytest.raises(Unauthorized, match="revoked"):
                await service.authenticate(access)

    run(own_database_url, scenario)


def test_a_token_whose_user_is_gone_is_refused(own_database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (service, _):
            created = await service.create_sdk_token(user_id)
            access = service.access_token_for(created.token).access_token
        async with auth() as (service, _):
            await service.delete_user(user_id)
        async with auth() as (service, _):
            with pytest.raises(Unauthorized):
                await service.authenticate(access)
            with pytest.raises(Unauthorized):
                await service.principal_of_token(created.token.id)

    run(own_database_url, scenario)


def test_a_console_session_keeps_the_role_of_its_user(own_database_url: str) -> None:
    # a console session acts through principal_of_token: a viewer signed in there stays a
    # viewer (the services' require_create and visibility checks read the role from it)
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        roles = {"viewer": {"is_viewer": True}, "admin": {"is_admin": True}, "member": {}}
        for kind, flags in roles.items():
            async with auth() as (service, _):
                user = await service.create_user(
                    name=kind, email=f"{uuid.uuid4().hex}@example.com", **flags)
                created = await service.create_sdk_token(str(user.id))
                access = service.access_token_for(created.token).access_token
            async with auth() as (service, _):
                console = await service.principal_of_token(created.token.id)
                api = await service.authenticate(access)
            assert kind_of(console) == kind_of(api) == kind

    run(own_database_url, scenario)


def test_an_access_token_naming_another_user_than_its_token_is_refused(
        own_database_url: str) -> None:
    from gristmill_platform.auth.tokens import encode_access_token

    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        owner, other = await new_user(auth), await new_user(auth)
        async with auth() as (service, _):
            created = await service.create_sdk_token(owner)
        forged, _ = encode_access_token(key=KEY, user_id=other, token_id=created.token.id,
                                        scope="user", execution_id=None, ttl_s=60)
        async with auth() as (service, _):
            with pytest.raises(Unauthorized):
                await service.authenticate(forged)

    run(own_database_url, scenario)


def test_revoking_an_executions_tokens_is_one_statement(own_database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        execution_id = f"e-{uuid.uuid4().hex}"
        async with auth() as (service, _):
            first = await service.create_sdk_token(user_id, scope="execution",
                                                   execution_id=execution_id)
            second = await service.create_sdk_token(user_id, scope="execution",
                                                    execution_id=execution_id)
            other = await service.create_sdk_token(user_id, scope="execution",
                                                   execution_id="someone-else")
        async with auth() as (service, session):
            loaded = await service.tokens.get(first.token.id)
            with counted(engine) as statements:
                await service.revoke_execution_tokens(execution_id)
            assert len(statements) == 1, statements
            assert loaded is not None and loaded.revoked_at is not None  # in the session too
        async with auth() as (service, _):
            for token, revoked in ((first, True), (second, True), (other, False)):
                row = await service.tokens.get(token.token.id)
                assert row is not None and (row.revoked_at is not None) is revoked
            access = service.access_token_for(second.token).access_token
        async with auth() as (service, _):
            with pytest.raises(Unauthorized, match="revoked"):
                await service.authenticate(access)

    run(own_database_url, scenario)


def test_revoking_writes_a_token_the_session_holds_unflushed(own_database_url: str) -> None:
    """The UPDATE runs on the session's connection: a token added and not flushed yet (a
    graph's nodes record theirs with flush=False) is written first, then revoked."""
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        execution_id = f"e-{uuid.uuid4().hex}"
        async with auth() as (service, _):
            pending = await service.create_sdk_token(user_id, scope="execution",
                                                     execution_id=execution_id, flush=False)
            await service.revoke_execution_tokens(execution_id)
            assert pending.token.revoked_at is not None
        async with auth() as (service, _):
            row = await service.tokens.get(pending.token.id)
            assert row is not None and row.revoked_at is not None

    run(own_database_url, scenario)


def test_setting_columns_of_a_missing_execution_says_so(own_database_url: str) -> None:
    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        async with auth() as (_, session):
            assert not await ExecutionRepository(session).set_columns(
                "no-such-execution", worker="local-1")

    run(own_database_url, scenario)


def test_setting_columns_flushes_what_the_session_holds_first(own_database_url: str) -> None:
    """set_columns is a plain UPDATE on the session's connection: an execution added to
    the session and not flushed yet is written before it, as the ORM's update would."""
    from sqlalchemy import select

    from gristmill_platform.db.models.executions import Execution

    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        async with auth() as (_, session):
            session.add(Execution(id="e-set-columns", pipeline_name="p", step_name="s"))
            assert await ExecutionRepository(session).set_columns(
                "e-set-columns", worker="local-7", resource_usage={"cpu_s": 1.5})
            await session.commit()
        async with engine.connect() as connection:
            table = Execution.__table__
            row = (await connection.execute(
                select(table.c.worker, table.c.resource_usage)
                .where(table.c.id == "e-set-columns"))).one()
        assert (row.worker, row.resource_usage) == ("local-7", {"cpu_s": 1.5})

    run(own_database_url, scenario)


def test_a_requests_check_is_one_read_without_a_session_and_sees_a_revocation(
        own_database_url: str) -> None:
    """What deps.current_principal does on every request: the token's standing read on a
    bare connection (Transactions.read, no ORM session), one statement, and a
    revocation committed just before is seen by the next check. The journal's barrier
    runs first only when the journal holds that token's row or revocation."""
    from gristmill_platform.auth.repository import STANDING
    from gristmill_platform.auth.service import principal_of, verified_claims
    from gristmill_platform.db.transactions import Transactions

    async def scenario(engine: AsyncEngine, auth: Any) -> None:
        user_id = await new_user(auth)
        async with auth() as (service, _):
            created = await service.create_sdk_token(user_id)
            access = service.access_token_for(created.token).access_token
        transactions = Transactions(create_session_factory(engine))
        barriers: list[int] = []

        async def barrier() -> None:
            barriers.append(1)

        transactions.barrier = barrier
        held: set[str] = set()
        transactions.holds_token = held.__contains__

        async def check() -> Any:
            claims = verified_claims(access, KEY)
            return principal_of(claims, await transactions.read(
                STANDING, claims.token_id, token_id=claims.token_id))

        with counted(engine) as statements:
            principal = await check()
        assert len(statements) == 1 and "JOIN users" in statements[0], statements
        assert barriers == []  # nothing the journal holds is this token's
        held.add(created.token.id)  # say, an execution token not written yet
        await check()
        assert barriers == [1]  # written first, as for a session
        # a read not said to be about a token's row: always after the barrier
        assert await transactions.read(STANDING, "no-such-token") is None
        assert barriers == [1, 1]
        held.clear()
        assert (principal.user_id, principal.token_id) == (user_id, created.token.id)
        async with auth() as (service, _):
            await service.revoke_sdk_token(created.token.id)
        with pytest.raises(Unauthorized, match="revoked"):
            await check()
        with pytest.raises(Unauthorized):
            verified_claims(access + "x", KEY)

    run(own_database_url, scenario)


def test_a_request_waits_for_the_journal_in_its_token_check_only_for_a_token_it_holds(
        tmp_path: Any) -> None:
    """deps.current_principal passes the token's id to Transactions.read: a request
    whose token the journal does not hold meets the barrier once (its handler's
    transaction), one whose token it holds twice."""
    from fastapi.testclient import TestClient

    from gristmill_platform.app import create_app
    from gristmill_platform.bootstrap import prepare_environment
    from gristmill_platform.settings import Settings, resolve_settings

    settings = resolve_settings(Settings(data_dir=tmp_path / "env"))
    token = prepare_environment(settings).sdk_token
    assert token is not None
    with TestClient(create_app(settings)) as client:
        access = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
        assert access.status_code == 200, access.text
        headers = {"Authorization": f"Bearer {access.json()['access_token']}"}
        transactions = client.app.state.gristmill.transactions  # type: ignore[attr-defined]
        barrier, calls = transactions.barrier, []

        async def counted_barrier() -> None:
            calls.append(1)
            await barrier()

        transactions.barrier = counted_barrier
        assert client.get("/api/v1/users/me", headers=headers).status_code == 200
        assert len(calls) == 1
        transactions.holds_token = lambda _token_id: True  # say, a step's execution token
        assert client.get("/api/v1/users/me", headers=headers).status_code == 200
        assert len(calls) == 3
