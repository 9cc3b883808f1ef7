"""Persistence of every interaction (usage rows, daily rollup) and of virtual keys.

``open_storage(url)`` picks the backend: PostgreSQL (asyncpg) or SQLite (embedded default), both behind the
``Storage`` protocol with the same logical schema. ``UsageWriter`` batches writes off the request path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from router.storage.errors import (
    DuplicateKeyError,
    InvalidQueryError,
    StorageDataError,
    StorageError,
    StorageUnavailableError,
)
from router.storage.models import GROUP_BY, KeyActivity, KeyRecord, Storage, UsageFilter, UsageRecord
from router.storage.writer import UsageWriter

if TYPE_CHECKING:
    from router.config import UsageSettings


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


def build_usage_writer(storage: Storage, settings: UsageSettings, *, database_url: str,
                       on_written: Callable[[int], None], on_error: Callable[[str], None]) -> UsageWriter:
    """The batching writer the ``usage`` settings ask for; its spill file (rows kept through a database outage)
    sits beside an SQLite database, else under ``.deja/``."""
    spill = settings.spill_path
    if spill is None and database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        spill = str(Path(database_url.removeprefix("sqlite:///")).parent / "usage-spill.jsonl")
    elif spill is None:
        spill = str(Path(".deja") / "usage-spill.jsonl")
    Path(spill).parent.mkdir(parents=True, exist_ok=True)
    return UsageWriter(storage, max_queue=settings.queue_max, batch_size=settings.batch_size,
                       flush_interval=settings.flush_interval, spill_path=spill,
                       max_body_bytes=settings.max_body_bytes, store_bodies=settings.store_messages,
                       retention_days=settings.retention_days, on_written=on_written, on_error=on_error)


def prepare_sqlite_dir(url: str) -> None:
    """Create the folder of an SQLite database file."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
