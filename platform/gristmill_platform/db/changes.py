"""Which tables this process has changed: a version per watched model, bumped when a
transaction that wrote one of its rows through the ORM commits.

In-memory caches on hot paths (endpoint deployments, environment variables) compare the
version they were loaded at with the current one, so a change made through this process
is seen by the very next request. Changes made by another process are not seen here: the
caches also expire after a short time (see their modules)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

_versions: dict[type[Any], int] = {}
_KEY = "gristmill_changed_models"


def watch(model: type[Any]) -> None:
    _versions.setdefault(model, 0)


def version(model: type[Any]) -> int:
    return _versions.get(model, 0)


def bump(model: type[Any]) -> None:
    _versions[model] = _versions.get(model, 0) + 1


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    if not _versions:
        return
    changed: set[type[Any]] = session.info.setdefault(_KEY, set())
    for instance in (*session.new, *session.dirty, *session.deleted):
        model = type(instance)
        if model in _versions:
            changed.add(model)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for model in session.info.pop(_KEY, ()):
        bump(model)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_KEY, None)
