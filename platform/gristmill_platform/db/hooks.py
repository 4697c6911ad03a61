"""Side effects tied to the outcome of the request's transaction.

Files are not transactional: a blob replaced by an upload may only be deleted once the
row pointing at the new blob has committed, and a blob written for a transaction that
rolls back must go. Services register those effects here; the session dependency runs
them after commit or rollback."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("gristmill.db")

Effect = Callable[[], None]


def on_commit(session: AsyncSession, effect: Effect) -> None:
    session.info.setdefault("on_commit", []).append(effect)


def on_rollback(session: AsyncSession, effect: Effect) -> None:
    session.info.setdefault("on_rollback", []).append(effect)


def run_effects(session: AsyncSession, *, committed: bool) -> None:
    effects: list[Effect] = session.info.pop("on_commit" if committed else "on_rollback", [])
    session.info.pop("on_rollback" if committed else "on_commit", None)
    for effect in effects:
        try:
            effect()
        except Exception:  # an effect failing must not turn a committed request into a 500
            log.exception("post-transaction effect failed")
