"""Persistence of every interaction (usage rows, daily rollup) and of virtual keys.

``open_storage(url)`` picks the backend: PostgreSQL (asyncpg) or SQLite (embedded default), both behind the
``Storage`` protocol with the same logical schema. ``UsageWriter`` batches writes off the request path.
"""

from __future__ import annotations

from router.storage.errors import (
    DuplicateKeyError,
    InvalidQueryError,
    StorageDataError,
    StorageError,
    StorageUnavailableError,
)
from router.storage.models import GROUP_BY, KeyActivity, KeyRecord, Storage, UsageFilter, UsageRecord
from router.storage.writer import UsageWriter


def open_storage(url: str, *, schema: str | None = None) -> Storage:
    """A not-yet-connected storage for ``url``; call ``connect()`` then ``migrate()``.

    ``postgresql://…`` / ``postgres://…`` → PostgreSQL (``schema`` sets the search_path and is created if
    missing); ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://:memory:`` → SQLite.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from router.storage.postgres import PostgresStorage

        return PostgresStorage(url, schema=schema)
    if scheme == "sqlite":
        from router.storage.sqlite import SqliteStorage

        return SqliteStorage(url)
    raise StorageError(f"unsupported storage URL {url.split('@')[-1]!r}: use postgresql:// or sqlite://")


__all__ = [
    "GROUP_BY",
    "DuplicateKeyError",
    "InvalidQueryError",
    "KeyActivity",
    "KeyRecord",
    "Storage",
    "StorageDataError",
    "StorageError",
    "StorageUnavailableError",
    "UsageFilter",
    "UsageRecord",
    "UsageWriter",
    "open_storage",
]
