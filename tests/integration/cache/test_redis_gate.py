"""The two-stage semantic tier on the real Redis, several replicas: gate vectors and kept transformer vectors
are shared like the rest of an entry, and every replica decides the same."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from cache import LookupResult, RedisStore, SemanticCache, StaticEmbedder
from cache.ann import AnnScope

from .conftest import BagOfWordsEmbedder, answer, eventually, request

Factory = Callable[[], Awaitable[SemanticCache]]
GATE = StaticEmbedder.load()


class CountingEmbedder(BagOfWordsEmbedder):
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return await super().embed(texts)


@pytest.fixture
async def replicas(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Factory, list[CountingEmbedder]]]:
    caches: list[SemanticCache] = []
    embedders: list[CountingEmbedder] = []

    async def factory() -> SemanticCache:
        embedder = CountingEmbedder()
        store = RedisStore(redis_url, prefix=redis_prefix, dim=GATE.dim)
        cache = SemanticCache(store, embedder, None, gate=GATE)
        await cache.start()
        caches.append(cache)
        embedders.append(embedder)
        return cache

    yield factory, embedders
    for cache in caches:
        await cache.close()


async def ask(cache: SemanticCache, text: str) -> LookupResult:
    scope, body, query = request(text)
    return await cache.lookup(scope, body, query, threshold=0.5)


async def put(cache: SemanticCache, text: str, lookup: LookupResult | None = None) -> None:
    scope, body, query = request(text)
    await cache.store(scope, body, query, answer(text.upper()), lookup=lookup)


async def test_replicas_share_gate_and_kept_transformer_vectors(
    replicas: tuple[Factory, list[CountingEmbedder]], redis_url: str
) -> None:
    factory, embedders = replicas
    a, b, c = await factory(), await factory(), await factory()
    miss = await ask(a, "What is the capital of France?")
    assert miss.stage == "gate"
    await put(a, "What is the capital of France?", lookup=miss)
    assert embedders[0].texts == []  # a gate miss stores without the transformer

    async def b_hits() -> bool:
        return (await ask(b, "what is the capital city of France")).kind == "semantic"

    await eventually(b_hits, 2.0, "b indexed a's gate vector")
    assert embedders[1].texts == ["what is the capital city of France", "What is the capital of France?"]
    entry_key = a.backend_store.keys.entry((await ask(a, "What is the capital of France?")).entry.id)  # type: ignore[attr-defined,union-attr]
    client = aioredis.from_url(redis_url)
    try:
        dense = await client.hget(entry_key, "dense")
        assert dense is not None and len(dense) == 4 * BagOfWordsEmbedder.dim
    finally:
        await client.aclose()

    async def c_hits() -> bool:
        return (await ask(c, "capital of France, what is it")).kind == "semantic"

    await eventually(c_hits, 2.0, "c indexed the entry")
    # c uses the transformer vector b kept in Redis: only its own query was embedded.
    assert embedders[2].texts and set(embedders[2].texts) == {"capital of France, what is it"}
    for cache in (a, b, c):  # every replica decides the same for the same question
        result = await ask(cache, "How do I bake sourdough bread at home?")
        assert result.kind == "miss" and result.stage == "gate"


async def test_kept_vector_never_recreates_a_deleted_entry(
    replicas: tuple[Factory, list[CountingEmbedder]], redis_url: str
) -> None:
    factory, _ = replicas
    a = await factory()
    store = a.backend_store
    assert isinstance(store, RedisStore)
    await store.keep_dense("no-such-entry", np.ones(4, dtype=np.float32))
    client = aioredis.from_url(redis_url)
    try:
        assert await client.exists(store.keys.entry("no-such-entry")) == 0
    finally:
        await client.aclose()


async def test_rows_of_another_dimension_are_skipped_not_fatal(
    replicas: tuple[Factory, list[CountingEmbedder]], redis_url: str, redis_prefix: str
) -> None:
    old = SemanticCache(RedisStore(redis_url, prefix=redis_prefix), BagOfWordsEmbedder(), None)  # one stage
    try:
        await old.start()
        scope, body, query = request("an entry from an older deja")
        await old.store(scope, body, query, answer("old"))
    finally:
        await old.close()
    factory, _ = replicas
    a = await factory()
    assert (await ask(a, "an entry from an older deja")).kind == "exact"
    await put(a, "a new entry with a gate vector")

    async def indexed() -> bool:
        store: Any = a.backend_store
        return bool(store.indexed == 1)

    await eventually(indexed, 2.0, "only the new entry is indexed")


async def test_replicas_refuse_before_the_transformer_alike(redis_url: str, redis_prefix: str) -> None:
    from cache.verify import Verifier

    verifier = Verifier.load_default()
    caches: list[SemanticCache] = []
    embedders: list[CountingEmbedder] = []
    try:
        for _ in range(2):
            embedders.append(CountingEmbedder())
            caches.append(SemanticCache(RedisStore(redis_url, prefix=redis_prefix, dim=GATE.dim), embedders[-1],
                                        verifier, gate=GATE))
            await caches[-1].start()
        await put(caches[0], "What was the GATE 2017 cut-off for mechanical engineering?")

        async def swapped(cache: SemanticCache) -> LookupResult:
            scope, body, query = request("What was the GATE 2018 cut-off for mechanical engineering?")
            return await cache.lookup(scope, body, query)

        async def indexed() -> bool:
            return (await swapped(caches[1])).stage == "verifier"

        await eventually(indexed, 2.0, "the second replica indexed the entry")
        for cache in caches:
            result = await swapped(cache)
            assert result.kind == "miss" and result.stage == "verifier"
            assert result.rejected_reason == "number-mismatch"
        assert all(e.texts == [] for e in embedders)  # neither replica ran the transformer
    finally:
        for cache in caches:
            await cache.close()


async def test_a_reserved_row_is_claimed_by_the_redis_put_and_reaches_other_replicas(
    redis_url: str, redis_prefix: str
) -> None:
    """A gate miss asked to reserve inserts its graph row at lookup; the Redis put claims it (and the stream's echo
    is not inserted again): one graph key per entry. Another replica finds the entry through the stream."""
    stores = [RedisStore(redis_url, prefix=redis_prefix, dim=GATE.dim, ann_min_rows=8, ann_dtype="i8")
              for _ in range(2)]
    a, b = (SemanticCache(store, BagOfWordsEmbedder(), None, gate=GATE) for store in stores)
    await a.start()
    await b.start()
    try:
        texts = [f"How many {thing} fit in a standard shipping container?" for thing in
                 ("bananas", "pianos", "bicycles", "refrigerators", "sofas", "tyres", "laptops", "barrels",
                  "tables", "kayaks")]
        for text in texts:
            await put(a, text)
        question = "What is the boiling point of water at the top of Everest?"
        scope, body, query = request(question)
        missed = await a.lookup(scope, body, query, threshold=0.5, reserve=True)
        assert missed.kind == "miss" and missed.stage == "gate"
        (graph,) = stores[0]._index._scopes.values()
        assert isinstance(graph, AnnScope) and graph.reserved == 1
        await a.store(scope, body, query, answer("about 70 degrees"), lookup=missed)

        async def echoed() -> bool:
            return stores[0]._seen >= len(texts) + 1

        await eventually(echoed, 5.0, "the stream's add events applied")
        assert (graph.reserved, graph._dead, graph._next_key) == (0, 0, len(texts) + 1)

        async def replicated() -> bool:
            return (await ask(b, question + " Please")).kind == "semantic"

        await eventually(replicated, 5.0, "the other replica serving it")
    finally:
        await a.close()
        await b.close()
