"""Fixtures shared by the integration tests: a fake OpenAI upstream and a throwaway Redis server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from providers.fake_openai import FakeOpenAI
from tests.conftest import IN_CI
from tests.integration.harness import RedisServer


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as up:
        yield up


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server binary is required under CI=true", pytrace=False)
        pytest.skip("redis-server binary not found")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()
