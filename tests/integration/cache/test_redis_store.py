"""RedisStore on the real Redis: replicas share one cache, clear, capacity, TTL, resync."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from cache import Keys, RedisStore, SemanticCache
from cache.ann import AnnScope

from .conftest import BagOfWordsEmbedder, answer, eventually, request

Factory = Callable[..., Awaitable[SemanticCache]]


@pytest.fixture
async def make_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[Factory]:
    caches: list[SemanticCache] = []

    async def factory(capacity: int = 1000, **kw: Any) -> SemanticCache:
        store = RedisStore(redis_url, prefix=redis_prefix, capacity=capacity)
        cache = SemanticCache(store, BagOfWordsEmbedder(), None, **kw)
        await cache.start()
        caches.append(cache)
        return cache

    yield factory
    for cache in caches:
        await cache.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def put(cache: SemanticCache, text: str, **kw: Any) -> None:
    ttl = kw.pop("ttl_seconds", None)
    scope, body, query = request(text, **kw)
    await cache.store(scope, body, query, answer(text.upper()), ttl_seconds=ttl)


async def kind(cache: SemanticCache, text: str, threshold: float = 0.5, **kw: Any) -> str:
    scope, body, query = request(text, **kw)
    return (await cache.lookup(scope, body, query, threshold=threshold)).kind


async def test_replicas_see_each_others_entries(make_cache: Factory) -> None:
    a, b = await make_cache(), await make_cache()
    await put(a, "what is the capital of France")
    assert await kind(b, "what is the capital of France") == "exact"  # straight from Redis
    await eventually(lambda: _is(b, "what is the capital city of France", "semantic"), 1.0, "replica sync")
    await put(b, "how tall is mount everest")
    await eventually(lambda: _is(a, "how tall is mount everest exactly", "semantic"), 1.0, "reverse sync")
    scope, body, query = request("what is the capital city of France")
    result = await b.lookup(scope, body, query, threshold=0.5)
    assert result.entry is not None and result.entry.response == answer("WHAT IS THE CAPITAL OF FRANCE")
    assert result.entry.query == "what is the capital of France"
    stats = await a.stats()
    assert (stats.entries, stats.scopes, stats.backend) == (2, 1, "redis")


async def _is(cache: SemanticCache, text: str, expected: str) -> bool:
    return await kind(cache, text) == expected


async def test_new_replica_rebuilds_index_from_redis(make_cache: Factory) -> None:
    a = await make_cache()
    for text in ("alpha beta gamma", "delta epsilon zeta", "eta theta iota"):
        await put(a, text)
    late = await make_cache()
    assert late.backend_store.indexed == 3  # type: ignore[attr-defined]
    assert await kind(late, "delta epsilon zeta please") == "semantic"


async def test_clear_is_seen_by_every_replica(make_cache: Factory) -> None:
    a, b = await make_cache(), await make_cache()
    await put(a, "one fish two fish", namespace="n1")
    await put(a, "red fish blue fish", namespace="n1")
    await put(a, "green eggs and ham", namespace="n2")
    await eventually(lambda: _indexed(b, 3), 1.0, "b indexed everything")
    assert await b.clear(namespace="n1", model="some-other-model") == 0
    assert await b.clear(namespace="n1") == 2
    assert await kind(a, "one fish two fish", namespace="n1") == "miss"
    await eventually(lambda: _indexed(a, 1), 1.0, "a dropped the cleared vectors")
    assert await kind(a, "green eggs and ham", namespace="n2") == "exact"
    assert await a.clear() == 1
    assert (await b.stats()).entries == 0


async def _indexed(cache: SemanticCache, n: int) -> bool:
    return cache.backend_store.indexed == n  # type: ignore[attr-defined]


async def test_capacity_evicts_least_recently_used(make_cache: Factory, raw: aioredis.Redis) -> None:
    a = await make_cache(capacity=3)
    b = await make_cache(capacity=3)
    for text in ("apples oranges", "cars trucks", "rivers lakes"):
        await put(a, text)
    assert await kind(b, "apples oranges") == "exact"  # a hit on another replica refreshes recency
    await put(a, "stars planets")
    assert await kind(a, "cars trucks") == "miss"
    for text in ("apples oranges", "rivers lakes", "stars planets"):
        assert await kind(b, text) == "exact", text
    assert (await a.stats()).entries == 3
    keys = Keys(a.backend_store.keys.prefix)  # type: ignore[attr-defined]
    assert await raw.zcard(keys.lru) == 3
    await eventually(lambda: _indexed(b, 3), 1.0, "eviction reached the other replica")


async def test_ttl_in_redis_and_with_injected_clock(make_cache: Factory, raw: aioredis.Redis) -> None:
    now = [1000.0]
    a = await make_cache(clock=lambda: now[0], ttl_seconds=60)
    await put(a, "short lived entry", ttl_seconds=30)
    entry_id = (await a.lookup(*request("short lived entry"))).entry.id  # type: ignore[union-attr]
    keys = a.backend_store.keys  # type: ignore[attr-defined]
    assert 0 < await raw.pttl(keys.entry(entry_id)) <= 30_000
    now[0] += 30
    assert await kind(a, "short lived entry") == "miss"
    assert await kind(a, "short lived entry again", threshold=0.0) == "miss"
    assert (await a.stats()).entries == 0
    assert not await raw.exists(keys.entry(entry_id))


async def test_entry_expired_in_redis_is_dropped_from_local_index(
    make_cache: Factory, raw: aioredis.Redis
) -> None:
    a = await make_cache()
    await put(a, "vanishing entry")
    keys = a.backend_store.keys  # type: ignore[attr-defined]
    entry_id = (await a.lookup(*request("vanishing entry"))).entry.id  # type: ignore[union-attr]
    await raw.delete(keys.entry(entry_id))  # what Redis expiry does, without a stream event
    assert a.backend_store.indexed == 1  # type: ignore[attr-defined]
    assert await kind(a, "vanishing entry now", threshold=0.0) == "miss"
    assert a.backend_store.indexed == 0  # type: ignore[attr-defined]


async def test_resync_when_redis_comes_back_empty(
    make_cache: Factory, raw: aioredis.Redis, redis_prefix: str
) -> None:
    a = await make_cache()
    await put(a, "remember me please")
    assert a.backend_store.indexed == 1  # type: ignore[attr-defined]
    keys = [k async for k in raw.scan_iter(match=redis_prefix + "*")]
    await raw.delete(*keys)  # like a restart of a Redis that keeps nothing on disk
    await eventually(lambda: _indexed(a, 0), 2.0, "index rebuilt after the data vanished")
    b = await make_cache()
    await put(b, "a brand new entry")
    await eventually(lambda: _is(a, "a brand new entry here", "semantic"), 1.0, "new entries after resync")


async def test_vectors_are_float32_bytes(make_cache: Factory, raw: aioredis.Redis) -> None:
    a = await make_cache()
    await put(a, "bytes please")
    entry_id = (await a.lookup(*request("bytes please"))).entry.id  # type: ignore[union-attr]
    vec = await raw.hget(a.backend_store.keys.entry(entry_id), "vec")  # type: ignore[attr-defined]
    expected = (await BagOfWordsEmbedder().embed(["bytes please"]))[0]
    assert np.array_equal(np.frombuffer(vec, dtype=np.float32), expected)


async def test_replica_that_fell_behind_the_trimmed_stream_resyncs(redis_url: str, redis_prefix: str) -> None:
    writer = RedisStore(redis_url, prefix=redis_prefix, stream_maxlen=1)
    reader = RedisStore(redis_url, prefix=redis_prefix, read_batch=10)
    wcache = SemanticCache(writer, BagOfWordsEmbedder(), None)
    try:
        await reader._resync()  # synced, but its tail is not running: it falls behind
        for i in range(300):  # MAXLEN ~ 1 trims whole stream nodes: most of these events are dropped
            await put(wcache, f"entry number {i}")
        await reader._tail_once()  # the stream was trimmed past where it was
        assert reader._need_resync
        await reader._tail_once()
        assert reader.indexed == 300
    finally:
        await reader.close()
        await writer.close()


async def test_exact_only_rewrite_removes_the_vector_everywhere(
    make_cache: Factory, redis_url: str, redis_prefix: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await put(a, "first with a vector")
    await eventually(lambda: _indexed(b, 1), 1.0, "b indexed the vector")
    exact_only = SemanticCache(RedisStore(redis_url, prefix=redis_prefix), None, None)
    try:
        await put(exact_only, "first with a vector")  # same request, cached without an embedding
    finally:
        await exact_only.close()
    await eventually(lambda: _indexed(b, 0), 1.0, "b dropped the vector")
    assert await kind(b, "first with a vector") == "exact"


async def test_a_replica_inserts_its_own_entries_once(redis_url: str, redis_prefix: str) -> None:
    """Each put goes into the local index at once and comes back on the stream: the echo is not inserted again
    (in an HNSW scope every insert costs a graph walk and leaves the replaced row dead)."""
    store = RedisStore(redis_url, prefix=redis_prefix, ann_min_rows=8)
    cache = SemanticCache(store, BagOfWordsEmbedder(), None)
    await cache.start()
    try:
        texts = [f"question number {i} about topic {i * 7}" for i in range(40)]
        for text in texts:
            await put(cache, text)

        async def echoed() -> bool:
            return store._seen >= len(texts)

        await eventually(echoed, 5.0, "the stream's add events applied")
        (scope,) = store._index._scopes.values()
        assert isinstance(scope, AnnScope)
        assert scope._next_key == len(texts)  # one key per entry: nothing was inserted twice
        assert scope._dead == 0
        assert await kind(cache, texts[17] + " please") == "semantic"
    finally:
        await cache.close()
