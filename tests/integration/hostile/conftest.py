"""A deja with a master key in front of the fake upstream, on SQLite and on PostgreSQL (own schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import STORAGE, USAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, drop_storage, make_settings, start_deja, storage_section
from tests.integration.router.storage.helpers import wait_for

MASTER = "sk-master-hostile"
USAGE_FIGURES = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Behaviour(usage=USAGE_FIGURES)) as up:
        yield up


async def start_hostile_deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI,
                             backend: str, **deja: Any) -> tuple[Deja, dict[str, Any]]:
    extra = storage_section(request, backend)
    settings = make_settings(tmp_path, upstream, master_key=MASTER, cache={"semantic": False}, **extra, **deja)
    return await start_deja(settings), extra




@pytest.fixture(params=["sqlite", "postgresql"])
async def deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server, extra = await start_hostile_deja(request, tmp_path, upstream, request.param)
    yield server
    await server.close()
    await drop_storage(extra)


async def usage_rows(server: Deja, expected: int) -> list[dict[str, Any]]:
    """Every usage row once ``expected`` are written (a streamed answer's row may follow its last byte);
    then one more flush, so a surplus row would show too."""
    storage, writer = server.app[STORAGE], server.app[USAGE]

    async def written() -> bool:
        await writer.flush()
        found, _ = await storage.list_requests(UsageFilter(), limit=1000)
        return len(found) >= expected

    await wait_for(written, timeout=20)
    await server.settled()
    assert await writer.flush()
    found, cursor = await storage.list_requests(UsageFilter(), limit=1000, include_bodies=True)
    assert cursor is None
    assert writer.rejected == 0 and writer.dropped == 0
    return found
