"""Units of work on the app's database: one transaction, its commit/rollback effects.

Below the HTTP edge every service that opens its own transaction is given a
``Transactions``; routes get theirs through deps.SessionDep, which uses the same one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gristmill_platform.db.hooks import run_effects
from gristmill_platform.db.loop_reads import GivenBack, LoopReads, Read

T = TypeVar("T")

Barrier = Callable[[], Awaitable[None]]
# Whether the barrier's side has an SDK token's row (or its revocation) not yet written
HoldsToken = Callable[[str], bool]


class Transactions:
    """Opens transactions on the app's database.

    ``barrier`` runs before each one: the composition root points it at the execution
    journal (executions/journal.py), so that what this process answered about is always in
    the database its transactions read."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], *,
                 loop_reads: LoopReads | None = None) -> None:
        self.session_factory = session_factory
        self.loop_reads = loop_reads
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

    async def read(self, read: Read[T], key: str, *, token_id: str | None = None) -> T:
        """``read`` by ``key`` without an ORM session, for a read of nothing the caller
        will write (what checking each request's access token needs; a session's set-up
        and commit cost more than its one query). Same barrier as a transaction. On SQLite
        it runs on the calling thread when it can be done at once (db/loop_reads.py), else
        on the async engine.

        ``token_id``: the read is of that SDK token's row and its user's, nothing else the
        barrier writes: it then runs only if that row or its revocation is pending
        (``holds_token``). Under warm load, the barrier wrote the calls answered in the
        last moments, and the one in flight, before every request's token check."""
        if self.barrier is not None and (token_id is None or self.holds_token(token_id)):
            await self.barrier()
        if self.loop_reads is not None:
            done = self.loop_reads.run(read, key)
            if not isinstance(done, GivenBack):
                return done
        engine: AsyncEngine = self.session_factory.kw["bind"]
        async with engine.connect() as connection:
            result = await connection.execute(read.statement, read.parameters(key))
            return read.shape(result.all() if read.many else result.first())

    @property
    def row_locks(self) -> bool:
        """Whether a read FOR UPDATE locks the row until the transaction ends. Not on
        SQLite, where reads take no lock at all (a write takes the whole database's)."""
        engine: AsyncEngine = self.session_factory.kw["bind"]
        return engine.dialect.name != "sqlite"

    def close(self) -> None:
        if self.loop_reads is not None:
            self.loop_reads.dispose()


class HasTransactions(Protocol):
    @property
    def transactions(self) -> Transactions: ...


def transaction(owner: HasTransactions) -> AbstractAsyncContextManager[AsyncSession]:
    """``async with transaction(x) as session``: a unit of work on x's database."""
    return owner.transactions()

