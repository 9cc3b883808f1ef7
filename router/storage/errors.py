"""The storage package's typed errors; asyncpg and sqlite3 exceptions are translated into these."""

from __future__ import annotations


class StorageError(Exception):
    """Any failure of the storage layer."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached (connection refused or lost, timeout, unopenable file)."""


class StorageDataError(StorageError):
    """The database rejected the values of a row (bad type, constraint): retrying will not help."""


class DuplicateKeyError(StorageError):
    """A virtual key with the same id or secret hash already exists."""


class InvalidQueryError(StorageError, ValueError):
    """A query argument is malformed: unknown ``group_by``, bad cursor, unknown key field."""
