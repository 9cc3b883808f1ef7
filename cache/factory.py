"""``build_cache``: the configured :class:`~cache.semantic.SemanticCache`, from plain values (the router passes
its ``CacheSettings``). Loading the verifier and the gate reads local files only, in a worker thread."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from cache.errors import CacheConfigError
from cache.redis_store import RedisStore
from cache.semantic import DEFAULT_MAX_QUERY_CHARS, SemanticCache
from cache.store import MemoryStore

if TYPE_CHECKING:
    from cache.embedder import Embedder
    from cache.gate import StaticEmbedder
    from cache.verify import Verifier


def _load_semantic_parts(gate: bool) -> tuple[Verifier, StaticEmbedder | None]:
    from cache.gate import StaticEmbedder
    from cache.verify import Verifier

    return Verifier.load_default(), StaticEmbedder.load() if gate else None


async def build_cache(
    *,
    embedder: Embedder | None,
    semantic: bool = True,
    redis: str | aioredis.Redis | None = None,
    redis_prefix: str = "deja:cache:",
    capacity: int = 100_000,
    ttl_seconds: float = 86400.0,
    max_semantic_temperature: float = 1.0,
    gate: bool = True,
    gate_threshold: float | None = None,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
) -> SemanticCache:
    """A cache over Redis (``redis``: a URL, or a client with ``decode_responses=False``) or memory (None);
    semantic tier when ``semantic`` and an embedder is given, two-stage (static gate first) when ``gate``.
    Not started: call ``start()``."""
    verifier = None
    static = None
    if semantic and embedder is not None:
        verifier, static = await asyncio.to_thread(_load_semantic_parts, gate)
    dim = static.dim if static is not None else (embedder.dim if semantic and embedder is not None else None)
    ann_dtype = "i8" if static is not None else "f16"  # the gate's vectors tolerate int8; the transformer's not
    store: Any
    if redis is not None:
        store = RedisStore(redis, prefix=redis_prefix, capacity=capacity, dim=dim, ann_dtype=ann_dtype)
    else:
        store = MemoryStore(capacity=capacity, dim=dim, ann_dtype=ann_dtype)
    try:
        return SemanticCache(
            store, embedder if semantic else None, verifier, ttl_seconds=ttl_seconds,
            max_semantic_temperature=max_semantic_temperature, gate=static, gate_threshold=gate_threshold,
            max_query_chars=max_query_chars,
        )  # fmt: skip
    except CacheConfigError:
        if isinstance(store, RedisStore):
            await store.close()
        raise
