"""Redis outages: the cache fails fast with CacheUnavailableError and heals by itself.

These tests run their own throwaway redis-server (see ``conftest.redis_server``) so they can kill, hang
and restart it. ``asyncio.wait_for`` only guards against a hang: a slow answer would surface as a
``TimeoutError`` instead of ``CacheUnavailableError`` and fail the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from cache import CacheUnavailableError, RedisStore, SemanticCache
from tests.integration.harness import RedisServer

from .conftest import BagOfWordsEmbedder, answer, eventually, request

HANG_GUARD = 3.0  # seconds; the store's own limit is ~0.5 s socket timeout (1.5 s hard cap per call)
Factory = Callable[[], Awaitable[SemanticCache]]


@pytest.fixture
async def make_cache(redis_server: RedisServer) -> AsyncIterator[Factory]:
    caches: list[SemanticCache] = []

    async def factory() -> SemanticCache:
        store = RedisStore(redis_server.url, prefix="deja:", capacity=100, socket_timeout=0.5)
        cache = SemanticCache(store, BagOfWordsEmbedder(), None)
        await cache.start()
        caches.append(cache)
        return cache

    yield factory
    for cache in caches:
        await asyncio.wait_for(cache.close(), HANG_GUARD)


async def put(cache: SemanticCache, text: str) -> None:
    scope, body, query = request(text)
    await asyncio.wait_for(cache.store(scope, body, query, answer(text)), HANG_GUARD)


async def kind(cache: SemanticCache, text: str) -> str:
    scope, body, query = request(text)
    return (await asyncio.wait_for(cache.lookup(scope, body, query, threshold=0.5), HANG_GUARD)).kind


async def works(cache: SemanticCache, text: str, expected: str) -> bool:
    try:
        return await kind(cache, text) == expected
    except CacheUnavailableError:
        return False


async def assert_unavailable(call: Awaitable[Any]) -> None:
    with pytest.raises(CacheUnavailableError):
        await asyncio.wait_for(call, HANG_GUARD)


async def test_killed_redis_fails_fast_then_heals_without_restarting_the_cache(
    make_cache: Factory, redis_server: RedisServer
) -> None:
    cache = await make_cache()
    await put(cache, "before the outage")
    assert await kind(cache, "before the outage") == "exact"

    redis_server.kill()
    for _ in range(3):
        await assert_unavailable(kind(cache, "before the outage"))
        await assert_unavailable(kind(cache, "something never seen"))
    await assert_unavailable(put(cache, "during the outage"))
    await assert_unavailable(cache.clear())
    await assert_unavailable(cache.stats())

    redis_server.start()  # same port, and empty: this Redis keeps nothing on disk
    await eventually(lambda: works(cache, "before the outage", "miss"), 10.0, "lookups work again")
    await eventually(lambda: _indexed(cache, 0), 5.0, "the local index forgot the lost entries")

    other = await make_cache()  # another replica writes after the restart...
    await put(other, "after the outage")
    # ...and the original cache object finds it, exactly and by similarity.
    assert await kind(cache, "after the outage") == "exact"
    await eventually(lambda: works(cache, "after the outage again", "semantic"), 5.0, "sync resumed")
    await put(cache, "written by the healed cache")
    assert await kind(other, "written by the healed cache") == "exact"
    assert (await cache.stats()).entries == 2


async def _indexed(cache: SemanticCache, n: int) -> bool:
    return cache.backend_store.indexed == n  # type: ignore[attr-defined]


async def test_hung_redis_times_out_instead_of_hanging(
    make_cache: Factory, redis_server: RedisServer
) -> None:
    cache = await make_cache()
    await put(cache, "the answer is cached")
    redis_server.pause()
    try:
        await assert_unavailable(kind(cache, "the answer is cached"))
        await assert_unavailable(put(cache, "another one"))
    finally:
        redis_server.resume()
    await eventually(lambda: works(cache, "the answer is cached", "exact"), 10.0, "lookups work after resume")
    await eventually(lambda: works(cache, "the answer is cached again", "semantic"), 5.0, "tail resumed")


async def test_start_while_redis_is_down_then_comes_up(redis_server: RedisServer) -> None:
    redis_server.kill()
    cache = SemanticCache(RedisStore(redis_server.url, prefix="deja:"), BagOfWordsEmbedder(), None)
    await asyncio.wait_for(cache.start(), HANG_GUARD)  # does not raise: the tail keeps retrying
    try:
        await assert_unavailable(kind(cache, "anything"))
        redis_server.start()
        await eventually(lambda: works(cache, "anything", "miss"), 10.0, "cache usable once Redis is up")
        await put(cache, "first entry ever")
        assert await kind(cache, "first entry ever please") == "semantic"
    finally:
        await asyncio.wait_for(cache.close(), HANG_GUARD)
