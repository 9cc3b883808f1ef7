"""SemanticCache over MemoryStore: the exact and semantic tiers, scoping, TTL, LRU, verifier policy."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import (
    CacheUnavailableError,
    MemoryStore,
    Scope,
    SemanticCache,
    build_scope,
)


class BagOfWordsEmbedder:
    """Test stand-in: hashed bag of words, so shared words mean high cosine. Counts calls."""

    dim = 256

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model exploded")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
        return out

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Verdict:
    accept: bool
    score: float
    reason: str


@dataclass(frozen=True)
class StubOutlook:
    """Knows no verdict in advance: the cache asks ``decide`` once the cosine is known."""

    view: tuple[str, str]
    best: Verdict

    def at(self, similarity: float) -> Verdict | None:
        return None


class StubVerifier:
    """Test stand-in: accepts above the floor unless the candidate text is on the refuse list."""

    default_min_similarity = 0.6

    def __init__(self, refuse: Sequence[str] = (), refuse_always: Sequence[str] = ()) -> None:
        self.refuse = set(refuse)
        self.refuse_always = set(refuse_always)  # refused by ``best_case``: whatever the cosine
        self.checked: list[tuple[str, str, float, float | None]] = []
        self.prechecked: list[tuple[str, str]] = []

    def view(self, query: str, candidate: str) -> tuple[str, str]:
        return query, candidate

    def best_case(self, view: tuple[str, str], *, min_similarity: float | None = None) -> Verdict:
        self.prechecked.append(view)
        if view[1] in self.refuse_always:
            return Verdict(False, 0.0, "refused whatever the cosine")
        return Verdict(True, 1.0, "open")

    def outlook(self, view: tuple[str, str], *, min_similarity: float | None = None) -> StubOutlook:
        return StubOutlook(view, self.best_case(view, min_similarity=min_similarity))

    def decide(self, view: tuple[str, str], similarity: float, *, min_similarity: float | None = None) -> Verdict:
        return self.check(*view, similarity, min_similarity=min_similarity)

    def check(
        self, query: str, candidate: str, similarity: float, *, min_similarity: float | None = None
    ) -> Verdict:
        self.checked.append((query, candidate, similarity, min_similarity))
        if candidate in self.refuse:
            return Verdict(False, similarity, f"refused {candidate!r}")
        return Verdict(True, similarity, "ok")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(text: str, **params: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return {"model": "gpt-4o-mini", "messages": messages, **params}


def request(text: str, tenant: str = "t1", namespace: str = "default", **params: Any):
    b = body(text, **params)
    scope, query = build_scope(b, tenant=tenant, namespace=namespace)
    return scope, b, query


def answer(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def embedder() -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder()


def make_cache(embedder: Any, verifier: Any = None, capacity: int = 100, **kw: Any) -> SemanticCache:
    return SemanticCache(MemoryStore(capacity=capacity), embedder, verifier, **kw)


async def put(cache: SemanticCache, text: str, reply: str | None = None, **kw: Any) -> None:
    ttl = kw.pop("ttl_seconds", None)
    scope, b, query = request(text, **kw)
    await cache.store(scope, b, query, answer(reply or text.upper()), ttl_seconds=ttl)


async def get(cache: SemanticCache, text: str, threshold: float | None = None, **kw: Any):
    scope, b, query = request(text, **kw)
    return await cache.lookup(scope, b, query, threshold=threshold)


async def test_exact_hit_needs_no_embedding(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?", "Paris")
    calls = embedder.calls
    result = await get(cache, "What is the capital of France?")
    assert result.kind == "exact" and result.similarity == 1.0
    assert result.entry is not None and result.entry.response == answer("Paris")
    assert embedder.calls == calls
    stats = await cache.stats()
    assert (stats.hits_exact, stats.hits_semantic, stats.misses, stats.entries) == (1, 0, 0, 1)
    assert stats.backend == "memory" and stats.capacity == 100 and stats.scopes == 1


async def test_exact_tier_only_without_embedder() -> None:
    cache = make_cache(None, None)
    await put(cache, "What is the capital of France?", "Paris")
    assert (await get(cache, "What is the capital of France?")).kind == "exact"
    assert (await get(cache, "what is the capital of france")).kind == "miss"


async def test_semantic_hit_on_near_duplicate(embedder: BagOfWordsEmbedder) -> None:
    verifier = StubVerifier()
    cache = make_cache(embedder, verifier)
    await put(cache, "What is the capital of France?", "Paris")
    await put(cache, "How tall is Mount Everest?", "8849 m")
    result = await get(cache, "what is the capital city of France")
    assert result.kind == "semantic" and result.entry is not None
    assert result.entry.response == answer("Paris")
    assert result.similarity == result.best_similarity and 0.6 <= result.similarity < 1.0
    assert result.candidates == 2 and result.rejected_reason is None
    query, candidate, _, floor = verifier.checked[-1]
    assert (query, candidate) == ("what is the capital city of France", "What is the capital of France?")
    assert floor == 0.6  # the verifier's default floor
    assert (await cache.stats()).hits_semantic == 1


def _variant(kind: str) -> tuple[Scope, dict[str, Any], str | None]:
    text, tenant, namespace = "What is the capital of France?", "t1", "default"
    b = body(text)
    if kind == "tenant":
        tenant = "t2"
    elif kind == "namespace":
        namespace = "other"
    elif kind == "temperature":
        b["temperature"] = 0.5
    elif kind == "model":
        b["model"] = "gpt-4o"
    elif kind == "system":
        b["messages"][0]["content"] = "Be verbose."
    scope, query = build_scope(b, tenant=tenant, namespace=namespace)
    return scope, b, query


@pytest.mark.parametrize("kind", ["tenant", "namespace", "temperature", "model", "system"])
async def test_no_semantic_hit_across_scopes_even_for_identical_text(
    embedder: BagOfWordsEmbedder, kind: str
) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?", "Paris")
    scope, b, query = _variant(kind)
    assert query == "What is the capital of France?"
    result = await cache.lookup(scope, b, query, threshold=0.0)
    assert result.kind == "miss" and result.entry is None
    assert result.best_similarity is None and result.candidates == 0


async def test_below_floor_is_a_miss_reporting_best_similarity(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?", "Paris")
    result = await get(cache, "capital of Spain please", threshold=0.95)
    assert result.kind == "miss" and result.best_similarity is not None
    assert 0.0 < result.best_similarity < 0.95 and result.candidates == 1
    assert result.rejected_reason is not None and "floor" in result.rejected_reason
    assert (await get(cache, "capital of Spain please", threshold=0.1)).kind == "semantic"


async def test_verifier_refusal_falls_through_to_next_candidate(embedder: BagOfWordsEmbedder) -> None:
    verifier = StubVerifier(refuse=["What is the capital of France?"])
    cache = make_cache(embedder, verifier)
    await put(cache, "What is the capital of France?", "Paris")
    await put(cache, "Tell me the capital of France", "Paris!")
    result = await get(cache, "What is the capital city of France?", threshold=0.3)
    assert result.kind == "semantic" and result.entry is not None
    assert result.entry.query == "Tell me the capital of France"
    assert result.rejected_reason == "refused 'What is the capital of France?'"
    assert result.similarity is not None and result.best_similarity is not None
    assert result.similarity < result.best_similarity

    verifier.refuse.add("Tell me the capital of France")
    refused = await get(cache, "What is the capital city of France?", threshold=0.3)
    assert refused.kind == "miss" and refused.rejected_reason == "refused 'What is the capital of France?'"


async def test_top_k_limits_candidates(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier(), top_k=2)
    for i in range(5):
        await put(cache, f"question number {i} about cats")
    result = await get(cache, "question about cats", threshold=0.0)
    assert result.kind == "semantic" and result.candidates == 2


async def test_temperature_above_maximum_is_exact_tier_only(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier(), max_semantic_temperature=1.0)
    await put(cache, "Write a poem about the sea", temperature=1.5)
    assert embedder.calls == 0  # not embedded: the semantic tier could never use it
    assert (await get(cache, "Write a poem about the sea", temperature=1.5)).kind == "exact"
    assert (await get(cache, "Write a poem about the sea!", temperature=1.5, threshold=0.0)).kind == "miss"
    assert embedder.calls == 0
    await put(cache, "Write a poem about the sea")  # no temperature: OpenAI's default 1.0 is allowed
    assert (await get(cache, "Write a poem about the sea!")).kind == "semantic"


async def test_semantic_flag_and_non_text_query_skip_embedding(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?")
    calls = embedder.calls
    scope, b, query = request("What is the capital city of France?")
    assert (await cache.lookup(scope, b, query, semantic=False)).kind == "miss"
    assert (await cache.lookup(scope, b, None)).kind == "miss"
    assert embedder.calls == calls


async def test_ttl_expiry_with_injected_clock(embedder: BagOfWordsEmbedder, clock: Clock) -> None:
    cache = make_cache(embedder, StubVerifier(), ttl_seconds=60, clock=clock)
    await put(cache, "What is the capital of France?")
    await put(cache, "How tall is Mount Everest?", ttl_seconds=5)
    clock.now += 4.9
    assert (await get(cache, "How tall is Mount Everest?")).kind == "exact"
    clock.now += 0.1
    assert (await get(cache, "How tall is Mount Everest?")).kind == "miss"
    near = await get(cache, "How tall is Mount Everest", threshold=0.0)  # only the live entry is a candidate
    assert near.kind == "semantic" and near.candidates == 1
    assert near.entry is not None and near.entry.query == "What is the capital of France?"
    clock.now += 55
    assert (await get(cache, "What is the capital of France?")).kind == "miss"
    assert (await get(cache, "What is the capital city of France?", threshold=0.0)).kind == "miss"
    assert (await cache.stats()).entries == 0


async def test_lru_eviction_and_hit_refreshes_recency(embedder: BagOfWordsEmbedder, clock: Clock) -> None:
    cache = make_cache(embedder, StubVerifier(), capacity=2, clock=clock)
    await put(cache, "alpha question")
    await put(cache, "beta question")
    assert (await get(cache, "alpha question")).kind == "exact"  # alpha is now the most recent
    await put(cache, "gamma question")
    assert (await get(cache, "beta question")).kind == "miss"
    assert (await get(cache, "alpha question")).kind == "exact"
    assert (await get(cache, "gamma question")).kind == "exact"
    assert (await cache.stats()).entries == 2


async def test_store_replaces_same_request(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?", "old")
    await put(cache, "What is the capital of France?", "new")
    result = await get(cache, "What is the capital of France?")
    assert result.entry is not None and result.entry.response == answer("new")
    assert (await cache.stats()).entries == 1


async def test_clear_by_namespace_and_model(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "one", namespace="a")
    await put(cache, "two", namespace="a")
    await put(cache, "three", namespace="b")
    assert await cache.clear(namespace="a", model="another-model") == 0
    assert await cache.clear(namespace="a") == 2
    assert (await get(cache, "one", namespace="a")).kind == "miss"
    assert (await get(cache, "three", namespace="b")).kind == "exact"
    assert await cache.clear(model="gpt-4o-mini") == 1
    assert (await cache.stats()).entries == 0 and await cache.clear() == 0


async def test_embedder_failure_is_cache_unavailable(embedder: BagOfWordsEmbedder) -> None:
    cache = make_cache(embedder, StubVerifier())
    await put(cache, "What is the capital of France?")
    embedder.fail = True
    assert (await get(cache, "What is the capital of France?")).kind == "exact"
    with pytest.raises(CacheUnavailableError):
        await get(cache, "What is the capital city of France?")


# -- the real model ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_embedder() -> Iterator[Any]:
    from cache.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    yield embedder
    asyncio.run(embedder.close())


@pytest.fixture(scope="session")
def real_verifier() -> Any:
    from cache.verify import Verifier

    return Verifier.load_default()


@pytest.mark.slow
async def test_semantic_hit_on_paraphrase_with_real_model(real_embedder: Any, real_verifier: Any) -> None:
    cache = SemanticCache(MemoryStore(), real_embedder, real_verifier)
    for text, reply in [
        ("How do I reverse a list in Python?", "Use reversed() or slicing."),
        ("What is the boiling point of water at sea level?", "100 °C"),
        ("Recommend a good science fiction novel.", "Dune."),
    ]:
        await put(cache, text, reply)
    hit = await get(cache, "How can I reverse a Python list?")
    assert hit.kind == "semantic" and hit.entry is not None
    assert hit.entry.response == answer("Use reversed() or slicing.")
    assert hit.similarity is not None and hit.similarity >= real_verifier.default_min_similarity
    miss = await get(cache, "How do I sort a dictionary by value in Python?")
    assert miss.kind == "miss" and miss.best_similarity is not None
    assert miss.best_similarity < 1.0


async def test_memory_store_keeps_a_dense_vector_only_for_live_entries() -> None:
    from cache.store import CacheEntry

    store = MemoryStore()
    entry = CacheEntry("a", "s", "q", {}, 0.0, 100.0, "ns", "m")
    await store.put(entry, np.ones(4, dtype=np.float32), 1.0)
    await store.keep_dense("a", np.full(3, 0.5, dtype=np.float32))
    await store.keep_dense("missing", np.ones(3, dtype=np.float32))
    kept = await store.get("a", 1.0)
    assert kept is not None and kept.dense is not None and kept.dense.tolist() == [0.5, 0.5, 0.5]
    assert await store.get("missing", 1.0) is None


async def test_keeping_a_dense_vector_keeps_the_entry_s_place_in_the_lru_order() -> None:
    from cache.store import CacheEntry

    store = MemoryStore(capacity=2)
    for entry_id in ("old", "new"):
        await store.put(CacheEntry(entry_id, "s", entry_id, {}, 0.0, 100.0, "ns", "m"), None, 1.0)
    await store.keep_dense("old", np.ones(3, dtype=np.float32))
    await store.put(CacheEntry("newest", "s", "newest", {}, 0.0, 100.0, "ns", "m"), None, 1.0)
    assert await store.get("old", 1.0) is None  # still the least recently used: evicted first
    assert await store.get("new", 1.0) is not None


async def test_memory_store_entries_are_invisible_to_the_cyclic_gc() -> None:
    """A full collection walks every object the GC tracks, with the event loop stopped: 100,000 cached entries
    must not be among them."""
    import gc

    from cache.store import CacheEntry

    store = MemoryStore()
    for i in range(50):
        entry = CacheEntry(f"e{i}", "scope", f"question {i}?", {"choices": [{"text": f"answer {i}"}]}, 0.0, 100.0,
                           "ns", "m", dense=np.ones(3, dtype=np.float32) if i % 2 else None)
        await store.put(entry, np.random.default_rng(i).random(4).astype(np.float32), 1.0)
    await store.keep_dense("e0", np.ones(3, dtype=np.float32))
    gc.collect()
    records = list(store._entries.values())
    assert len(records) == 50 and not any(gc.is_tracked(record) for record in records)
    kept = await store.get("e0", 1.0)
    assert kept is not None and kept.response == {"choices": [{"text": "answer 0"}]} and kept.dense is not None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0.5, 20.0), st.floats(0.0, 6.0), st.booleans()),
                max_size=60))
async def test_memory_store_counts_agree_with_a_plain_model(steps: list[tuple[int, float, float, bool]]) -> None:
    """Puts with assorted TTLs (replacing entries, evicting past capacity), the clock moving on, and counts: the
    store's count of live entries is always the model's, through the expiry log's stale rows and compactions."""
    from collections import OrderedDict

    from cache.store import CacheEntry

    store = MemoryStore(capacity=4)
    model: OrderedDict[str, float] = OrderedDict()
    now = 0.0
    for key, ttl, advance, count in steps:
        entry_id = f"e{key}"
        await store.put(CacheEntry(entry_id, "s", entry_id, {}, now, now + ttl, "ns", "m"), None, now)
        model.pop(entry_id, None)
        model[entry_id] = now + ttl
        while len(model) > 4:
            model.popitem(last=False)
        now += advance
        if count:
            live = {i for i, expires in model.items() if expires > now}
            assert (await store.counts(now)).entries == len(live)
            model = OrderedDict((i, e) for i, e in model.items() if i in live)
        if len(store._expiry) > 8:
            store._rebuild_expiry()
    live = {i for i, expires in model.items() if expires > now}
    assert (await store.counts(now)).entries == len(live)
    assert {i for i in live if await store.get(i, now) is not None} == live
