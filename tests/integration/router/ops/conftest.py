"""A running deja (master key, in-memory exact cache, SQLite usage log) in front of a fake OpenAI server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.router.ops.helpers import MASTER_KEY


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    settings = make_settings(tmp_path, upstream, master_key=MASTER_KEY, cache={"semantic": False})
    server = await start_deja(settings)
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s
