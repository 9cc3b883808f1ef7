"""SemanticCache: the two-tier cache facade the router calls.

Lookup order:

1. **Exact tier** - the entry whose id is :func:`~cache.scope.exact_key` of the request. No embedding.
   Served whatever the temperature: it is the very same request.
2. **Semantic tier** - only when the request has a plain-text last user message (``query``), an embedder is
   configured, the caller allows it, and the request temperature (absent = 1.0, the OpenAI default) is at most
   ``max_semantic_temperature``. The query is embedded, the ``top_k`` nearest entries *of the same Scope*
   are taken best first, and the first one with cosine >= floor that the verifier accepts is served. The
   floor is the request ``threshold`` if given, else the verifier's ``default_min_similarity`` (else
   :data:`DEFAULT_MIN_SIMILARITY` without a verifier, in which case the floor alone decides).

Storing embeds the query only when the semantic tier could ever use it (same conditions as the lookup), so
a high-temperature request is cached for exact replays only. A hit refreshes the entry's LRU recency; TTL
counts from creation and is not extended by hits. The embedder is owned by the caller: ``close()`` does not
close it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cache.errors import CacheConfigError, EmbeddingUnavailableError
from cache.scope import Scope, exact_key
from cache.store import CacheEntry, CacheStore

if TYPE_CHECKING:
    from cache.embedder import Embedder
    from cache.verify import Verifier

#: Similarity floor used when there is neither a request threshold nor a verifier.
DEFAULT_MIN_SIMILARITY = 0.9
#: OpenAI's default temperature, assumed when a request does not set one.
DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True)
class LookupResult:
    kind: Literal["exact", "semantic", "miss"]
    entry: CacheEntry | None
    similarity: float | None  # of the served entry (1.0 for exact)
    best_similarity: float | None  # best cosine seen in scope (1.0 for exact; None if nothing to compare)
    candidates: int  # semantic candidates compared (0 for exact hits)
    rejected_reason: str | None  # verifier reason when the best candidate was refused


@dataclass(frozen=True)
class CacheStats:
    entries: int
    scopes: int
    backend: str
    capacity: int
    hits_exact: int
    hits_semantic: int
    misses: int


def request_temperature(body: dict[str, Any]) -> float | None:
    """The request temperature (default 1.0), or None if it is not a number."""
    value = body.get("temperature")
    if value is None:
        return DEFAULT_TEMPERATURE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class SemanticCache:
    """Exact + semantic response cache over a :class:`~cache.store.CacheStore`."""

    def __init__(
        self,
        store: CacheStore,
        embedder: Embedder | None,
        verifier: Verifier | None,
        *,
        ttl_seconds: float = 86400,
        max_semantic_temperature: float = 1.0,
        top_k: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0:
            raise CacheConfigError(f"ttl_seconds must be positive, got {ttl_seconds}")
        if top_k < 1:
            raise CacheConfigError(f"top_k must be at least 1, got {top_k}")
        self._store = store
        self._embedder = embedder
        self._verifier = verifier
        self.ttl_seconds = float(ttl_seconds)
        self.max_semantic_temperature = float(max_semantic_temperature)
        self.top_k = top_k
        self._clock = clock
        self._hits_exact = 0
        self._hits_semantic = 0
        self._misses = 0

    @property
    def backend_store(self) -> CacheStore:
        return self._store

    async def start(self) -> None:
        await self._store.start()

    async def close(self) -> None:
        await self._store.close()

    def semantic_applicable(self, body: dict[str, Any], query: str | None, semantic: bool = True) -> bool:
        """Whether the semantic tier may be used (looked up or fed) for this request."""
        if not semantic or query is None or self._embedder is None:
            return False
        temperature = request_temperature(body)
        return temperature is not None and temperature <= self.max_semantic_temperature

    def floor(self, threshold: float | None) -> float:
        if threshold is not None:
            return float(threshold)
        if self._verifier is not None:
            return float(self._verifier.default_min_similarity)
        return DEFAULT_MIN_SIMILARITY

    async def _embed(self, text: str) -> np.ndarray:
        assert self._embedder is not None
        try:
            vectors = await self._embedder.embed([text])
        except Exception as exc:  # noqa: BLE001 - any embedder failure is translated at the boundary
            raise EmbeddingUnavailableError(f"embedding failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)[0]

    def _miss(
        self, best: float | None = None, candidates: int = 0, reason: str | None = None
    ) -> LookupResult:
        self._misses += 1
        return LookupResult("miss", None, None, best, candidates, reason)

    async def lookup(
        self,
        scope: Scope,
        body: dict[str, Any],
        query: str | None,
        *,
        threshold: float | None = None,
        semantic: bool = True,
    ) -> LookupResult:
        """Find a cached response for this request. Raises CacheUnavailableError if the backend is down."""
        now = self._clock()
        entry = await self._store.get(exact_key(scope, body), now)
        if entry is not None and entry.scope_key == scope.key:
            await self._store.touch(entry.id, now)
            self._hits_exact += 1
            return LookupResult("exact", entry, 1.0, 1.0, 0, None)
        if not self.semantic_applicable(body, query, semantic):
            return self._miss()
        assert query is not None
        vector = await self._embed(query)
        return await self._semantic_lookup(scope, query, vector, self.floor(threshold), now)

    async def _semantic_lookup(
        self, scope: Scope, query: str, vector: np.ndarray, floor: float, now: float
    ) -> LookupResult:
        matches = await self._store.search(scope.key, vector, self.top_k, now)
        if not matches:
            return self._miss()
        best = matches[0].similarity
        rejected: str | None = None
        for match in matches:
            if match.similarity < floor:
                break
            entry = await self._store.get(match.id, now)
            if entry is None or entry.scope_key != scope.key or entry.query is None:
                continue
            if self._verifier is not None:
                verdict = self._verifier.check(query, entry.query, match.similarity, min_similarity=floor)
                if not verdict.accept:
                    rejected = rejected or verdict.reason
                    continue
            await self._store.touch(entry.id, now)
            self._hits_semantic += 1
            return LookupResult("semantic", entry, match.similarity, best, len(matches), rejected)
        if rejected is None and best < floor:
            rejected = "below-floor"
        return self._miss(best, len(matches), rejected)

    async def store(
        self,
        scope: Scope,
        body: dict[str, Any],
        query: str | None,
        response: dict[str, Any],
        *,
        ttl_seconds: float | None = None,
    ) -> CacheEntry:
        """Cache ``response`` for this request (replacing any entry with the same exact key)."""
        ttl = self.ttl_seconds if ttl_seconds is None else float(ttl_seconds)
        if ttl <= 0:
            raise CacheConfigError(f"ttl_seconds must be positive, got {ttl}")
        semantic = self.semantic_applicable(body, query)
        vector = await self._embed(query) if semantic and query is not None else None
        now = self._clock()
        entry = CacheEntry(
            id=exact_key(scope, body),
            scope_key=scope.key,
            query=query,
            response=response,
            created_at=now,
            expires_at=now + ttl,
            namespace=scope.namespace,
            model=scope.model,
        )
        await self._store.put(entry, vector, now)
        return entry

    async def clear(self, *, namespace: str | None = None, model: str | None = None) -> int:
        return await self._store.clear(namespace=namespace, model=model)

    async def stats(self) -> CacheStats:
        counts = await self._store.counts(self._clock())
        return CacheStats(
            entries=counts.entries,
            scopes=counts.scopes,
            backend=self._store.backend,
            capacity=self._store.capacity,
            hits_exact=self._hits_exact,
            hits_semantic=self._hits_semantic,
            misses=self._misses,
        )
