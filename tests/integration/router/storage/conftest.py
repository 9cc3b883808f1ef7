from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.storage import Storage, open_storage
from router.storage.migrations import SQLITE


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(url, schema) for each backend: a SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/deja.db", None
    return request.getfixturevalue("database_url"), request.getfixturevalue("pg_schema")


@pytest.fixture
async def storage(storage_target: tuple[str, str | None]) -> AsyncIterator[Storage]:
    url, schema = storage_target
    s = open_storage(url, schema=schema)
    await s.connect()
    assert await s.migrate() == [version for version, _ in SQLITE]  # both backends have the same versions
    yield s
    await s.close()
