"""Units of work on the app's database: one transaction, its commit/rollback effects.

Below the HTTP edge every service that opens its own transaction is given a
``Transactions``; routes get theirs through deps.SessionDep, which uses the same one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gristmill_platform.db.hooks import run_effects

Barrier = Callable[[], Awaitable[None]]
# Whether the barrier's side has an SDK token's row (or its revocation) not yet written
HoldsToken = Callable[[str], bool]


class Transactions:
    """Opens transactions on the app's database.

    ``barrier`` runs before each one: the composition root points it at the execution
    journal (executions/journal.py), so that what this process answered about is always in
    the database its transactions read."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory
        self.barrier: Barrier | None = None
        self.holds_token: HoldsToken = lambda _token_id: True

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        """Committed when the block ends, rolled back when it raises; the session's
        commit/rollback effects (see db.hooks) run afterwards."""
        if self.barrier is not None:
            await self.barrier()
        async with self.unfenced() as session:
            yield session

    @asynccontextmanager
    async def unfenced(self) -> AsyncIterator[AsyncSession]:
        """A transaction without the barrier, for writes of rows the journal never holds
        nor depends on (resource samples): the barrier would write the journal's pending
        executions on the event loop first, a stall for the warm calls in flight."""
        async with self.session_factory() as session:
            try:
                async with session.begin():
                    yield session
            except BaseException:
                run_effects(session, committed=False)
                raise
            run_effects(session, committed=True)

    @asynccontextmanager
    async def reading(self, *, token_id: str | None = None
                      ) -> AsyncIterator[AsyncConnection]:
        """A connection for a few reads without an ORM session (what checking each
        request's access token needs; a session's set-up and commit cost more than its
        one query). Same barrier as a transaction; ended by a rollback (nothing to keep).

        ``token_id``: the reads are of that SDK token's row and its user's, nothing else
        the barrier writes: it then runs only if that row or its revocation is pending
        (``holds_token``). Under warm load, the barrier wrote the calls answered in the
        last moments, and the one in flight, before every request's token check."""
        if self.barrier is not None and (token_id is None or self.holds_token(token_id)):
            await self.barrier()
        engine = self.session_factory.kw["bind"]
        async with engine.connect() as connection:
            yield connection


class HasTransactions(Protocol):
    @property
    def transactions(self) -> Transactions: ...


def transaction(owner: HasTransactions) -> AbstractAsyncContextManager[AsyncSession]:
    """``async with transaction(x) as session``: a unit of work on x's database."""
    return owner.transactions()

