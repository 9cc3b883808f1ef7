"""build_cache: the configured SemanticCache from plain values."""

from __future__ import annotations

from typing import Any

from cache import LookupResult, MemoryStore, SemanticCache, build_cache, build_scope

from .test_two_stage import CountingEmbedder


async def _ask(cache: SemanticCache, text: str) -> LookupResult:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    scope, query = build_scope(body, tenant="t", namespace="n")
    return await cache.lookup(scope, body, query)


async def test_default_is_two_stage_in_memory() -> None:
    embedder = CountingEmbedder()
    cache = await build_cache(embedder=embedder, capacity=10, max_query_chars=20)
    assert isinstance(cache.backend_store, MemoryStore) and cache.backend_store.capacity == 10
    result = await _ask(cache, "What is the capital of France?" * 2)
    assert result.skipped == "too_large"
    result = await _ask(cache, "Hello there")
    assert result.stage == "gate" and embedder.texts == []


async def test_gate_off_and_semantic_off() -> None:
    embedder = CountingEmbedder()
    one_stage = await build_cache(embedder=embedder, gate=False)
    assert (await _ask(one_stage, "Hello there")).stage == "transformer"
    exact_only = await build_cache(embedder=embedder, semantic=False)
    assert (await _ask(exact_only, "Hello there")).skipped == "disabled"
