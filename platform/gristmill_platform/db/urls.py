"""Database URL handling: users give one URL; the service needs an async driver and the
migrations a sync one."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def async_url(url: str) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(
        f"Unsupported database URL scheme {parsed.drivername!r}: "
        "use sqlite:///path/to/file.sqlite3 or postgresql://user@host:5432/dbname"
    )


def sync_url(url: str) -> URL:
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite")
    return parsed  # psycopg 3 serves both sync and async


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> str | None:
    """The SQLite database's file; None for another database, or one in memory."""
    if not is_sqlite(url):
        return None
    path = sync_url(url).database
    return path if path and path != ":memory:" else None
