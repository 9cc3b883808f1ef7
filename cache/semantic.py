"""SemanticCache: the two-tier cache facade the router calls.

Lookup order:

1. **Exact tier** - the entry whose id is :func:`~cache.scope.exact_key` of the request. No embedding.
   Served whatever the temperature: it is the very same request.
2. **Semantic tier** - only when the request has a plain-text last user message (``query``) of at most
   ``max_query_chars`` characters (else the miss says ``skipped="too_large"``), an embedder is configured, the
   caller allows it, and the request temperature (absent = 1.0, the OpenAI default) is at most
   ``max_semantic_temperature``. It has two stages:

   a. **gate** (when a :class:`~cache.gate.StaticEmbedder` is configured): the query's static vector (~0.1 ms)
      is searched among the scope's stored static vectors; when no candidate reaches ``gate_threshold`` the
      lookup is a miss decided by the gate, and neither the transformer nor the verifier runs. The gate's
      candidates then meet the verifier's lexical half (rules and pair features, ~0.3 ms for two questions; on
      the event loop when both texts are short, see :data:`INLINE_PRECHECK_CHARS`, else in a worker thread):
      a candidate it would refuse at *every* cosine from the floor to 1 (:meth:`Verifier.best_case`, exact, so
      nothing it drops could have been served) is dropped, and when none is left the lookup is a miss decided
      by the verifier ("verifier" stage), again without the transformer. The same pass works out the
      verifier's verdict at every cosine (:class:`~cache.verify.Outlook`), so once the transformer's cosine is
      known the verdict is read off on the event loop, without running the trees or a thread again;
   b. **transformer**: the query is embedded by the transformer; the gate's best ``transformer_candidates``
      candidates at or above its threshold are re-ranked by the
      transformer's cosine (a stored entry's transformer vector is computed the first time it is a candidate,
      then kept with the entry, shared through Redis), and the first with cosine >= floor that the verifier
      accepts is served. Without a gate, the transformer's vectors are the searched ones (one stage).

   The floor is the request ``threshold`` if given, else the verifier's ``default_min_similarity`` (else
   :data:`DEFAULT_MIN_SIMILARITY` without a verifier, in which case the floor alone decides). The verifier's
   work on a pair runs in a worker thread, except the lexical half on short texts (a bounded cost, like the
   gate's).

Storing keeps the static vector (the searched one) and, when the lookup computed it, the transformer vector:
pass the lookup's result as ``store(..., lookup=result)`` and nothing is embedded again. Without it, storing
costs the static embedding only (with a gate) or one transformer embedding (without). Entries are fed to the
semantic tier under the same conditions as the lookup, so a high-temperature request is cached for exact
replays only. A hit refreshes the entry's LRU recency; TTL counts from creation and is not extended by hits.
The embedder is owned by the caller: ``close()`` does not close it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from cache.errors import CacheConfigError, EmbeddingUnavailableError
from cache.scope import Scope, exact_key
from cache.store import CacheEntry, CacheStore
from cache.verify import Outlook, Verdict, same_question

if TYPE_CHECKING:
    from cache.embedder import Embedder
    from cache.verify import Verifier

#: Similarity floor used when there is neither a request threshold nor a verifier.
DEFAULT_MIN_SIMILARITY = 0.9
#: OpenAI's default temperature, assumed when a request does not set one.
DEFAULT_TEMPERATURE = 1.0
#: Queries longer than this (characters) skip the semantic tier: nobody's giant prompt reaches the tokenizer.
DEFAULT_MAX_QUERY_CHARS = 4000
#: With a gate, at most this many of its candidates (the best by static cosine) reach the transformer: each may
#: need its own transformer vector the first time (a transformer run of ~5 ms each). On the QQP calibrate split
#: every hit served was the gate's first candidate.
DEFAULT_TRANSFORMER_CANDIDATES = 1
#: When the query and every candidate are at most this long (characters), the verifier's lexical half runs on the
#: event loop: ~0.3 ms for two questions, ~0.7 ms at this length (measured), against a worker thread's hop that
#: costs ~80 µs of CPU by itself and, while the loop is busy, a wait for the GIL. Longer texts take the thread.
INLINE_PRECHECK_CHARS = 500

Stage = Literal["exact", "gate", "verifier", "transformer"]


class Gate(Protocol):
    """The cheap first stage (:class:`cache.gate.StaticEmbedder`): text -> unit vector, synchronous."""

    dim: int

    def embed(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class QueryVectors:
    """What a lookup computed for its query, for ``store(..., lookup=result)`` to reuse."""

    query: str
    gate: np.ndarray | None
    dense: np.ndarray | None


@dataclass(frozen=True)
class LookupResult:
    kind: Literal["exact", "semantic", "miss"]
    entry: CacheEntry | None
    similarity: float | None  # of the served entry (1.0 for exact; the transformer's cosine for semantic)
    best_similarity: float | None  # best transformer cosine seen in scope (1.0 for exact; None if not run)
    candidates: int  # semantic candidates compared (0 for exact hits)
    #: The verifier's reason when the best candidate was refused; "below-gate": no candidate reached the gate.
    rejected_reason: str | None
    #: Which stage decided: "exact" (exact tier), "gate" (no candidate close enough by the static vectors),
    #: "verifier" (the verifier refuses every gate candidate whatever its cosine: no transformer ran),
    #: "transformer" (transformer cosine + verifier); None when the semantic tier was not consulted.
    stage: Stage | None = None
    floor: float | None = None  # the similarity floor the transformer stage used
    gate_similarity: float | None = None  # best static cosine among the gate's candidates
    gate_threshold: float | None = None
    verifier_score: float | None = None  # the verifier's probability for the served / best refused candidate
    verifier_reason: str | None = None  # its reason ("ok", "identical", "classifier", a rule, "below-floor")
    #: Why the semantic tier was not consulted: "too_large", "temperature", "disabled" (no embedder, no query
    #: or the caller said no); None when it was.
    skipped: str | None = None
    vectors: QueryVectors | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    scopes: int
    backend: str
    capacity: int
    hits_exact: int
    hits_semantic: int
    misses: int


@dataclass(frozen=True)
class _Candidate:
    entry: CacheEntry
    gate_similarity: float | None
    similarity: float


#: ``lookup(..., eager=True)`` starts the transformer early only for a gate candidate at least this close. With
#: 100,000 entries (bench-peers' fillers and 600 stored Quora questions; 1,500 unique questions and 1,800
#: paraphrases asked, in process), every one of the 134 semantic hits had a gate similarity of at least 0.90,
#: while 58% of the 805 questions the precheck refused (a run started for nothing) were below it
#: (``benchmarks/eager_gate.py``).
EAGER_GATE_SIMILARITY = 0.90


async def _translated(vectors: Awaitable[np.ndarray]) -> np.ndarray:
    """An embedder's vectors as float32, any failure of its as :class:`EmbeddingUnavailableError`."""
    try:
        return np.asarray(await vectors, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any embedder failure is translated at the boundary
        raise EmbeddingUnavailableError(f"embedding failed: {exc}") from exc


def _consume(done: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's exception, so that one nobody awaits is not reported as lost."""
    if not done.cancelled():
        done.exception()


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
        gate: Gate | None = None,
        gate_threshold: float | None = None,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
        transformer_candidates: int = DEFAULT_TRANSFORMER_CANDIDATES,
        eager_gate_similarity: float = EAGER_GATE_SIMILARITY,
    ) -> None:
        if ttl_seconds <= 0:
            raise CacheConfigError(f"ttl_seconds must be positive, got {ttl_seconds}")
        if top_k < 1:
            raise CacheConfigError(f"top_k must be at least 1, got {top_k}")
        if max_query_chars < 1:
            raise CacheConfigError(f"max_query_chars must be at least 1, got {max_query_chars}")
        from cache.gate import DEFAULT_GATE_THRESHOLD

        self._store = store
        self._embedder = embedder
        self._verifier = verifier
        self._gate = gate
        self.gate_threshold = DEFAULT_GATE_THRESHOLD if gate_threshold is None else float(gate_threshold)
        self.max_query_chars = max_query_chars
        self.transformer_candidates = max(1, transformer_candidates)
        self.eager_gate_similarity = float(eager_gate_similarity)
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

    def skip_reason(self, body: dict[str, Any], query: str | None, semantic: bool = True) -> str | None:
        """Why the semantic tier may not be used (looked up or fed) for this request; None: it may."""
        if not semantic or query is None or self._embedder is None:
            return "disabled"
        temperature = request_temperature(body)
        if temperature is None or temperature > self.max_semantic_temperature:
            return "temperature"
        if len(query) > self.max_query_chars:
            return "too_large"
        return None

    def semantic_applicable(self, body: dict[str, Any], query: str | None, semantic: bool = True) -> bool:
        """Whether the semantic tier may be used (looked up or fed) for this request."""
        return self.skip_reason(body, query, semantic) is None

    def floor(self, threshold: float | None) -> float:
        if threshold is not None:
            return float(threshold)
        if self._verifier is not None:
            return float(self._verifier.default_min_similarity)
        return DEFAULT_MIN_SIMILARITY

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        assert self._embedder is not None
        return await _translated(self._embedder.embed(list(texts)))

    def _miss(self, **details: Any) -> LookupResult:
        self._misses += 1
        return LookupResult("miss", None, None, details.pop("best", None), details.pop("candidates", 0),
                            details.pop("reason", None), **details)

    async def lookup(
        self,
        scope: Scope,
        body: dict[str, Any],
        query: str | None,
        *,
        threshold: float | None = None,
        semantic: bool = True,
        reserve: bool = False,
        eager: bool = False,
    ) -> LookupResult:
        """Find a cached response for this request. Raises CacheUnavailableError if the backend is down.
        ``reserve``: the caller will store a miss's answer (``store(..., lookup=result)``) and wants a miss the gate
        decides to insert its index row now, right after its search (:meth:`cache.store.CacheStore.reserve`).
        ``eager``: when the gate's best candidate reaches ``eager_gate_similarity``, start the query's transformer
        run before the verifier's lexical precheck rather than after it, so that the two overlap (latency); the
        run is wasted when the precheck then refuses every candidate (CPU). For when the server has CPU to spare."""
        now = self._clock()
        entry_id = exact_key(scope, body)
        entry = await self._store.get(entry_id, now)
        if entry is not None and entry.scope_key == scope.key:
            await self._store.touch(entry.id, now)
            self._hits_exact += 1
            return LookupResult("exact", entry, 1.0, 1.0, 0, None, stage="exact")
        skipped = self.skip_reason(body, query, semantic)
        if skipped is not None:
            return self._miss(skipped=skipped)
        assert query is not None
        floor = self.floor(threshold)
        if self._gate is None:
            dense = (await self._embed([query]))[0]
            vectors = QueryVectors(query, None, dense)
            matches = await self._store.search(scope.key, dense, self.top_k, now)
            found: list[tuple[str, float | None, float]] = [(m.id, None, m.similarity) for m in matches]
            return await self._decide(scope, query, await self._fetch(found, now), vectors, floor, now)
        gate_vector = self._gate.embed(query)
        matches = await self._store.search(scope.key, gate_vector, self.top_k, now)
        best_gate = matches[0].similarity if matches else None
        passing = [m for m in matches if m.similarity >= self.gate_threshold][: self.transformer_candidates]
        if not passing:
            if reserve:
                self._store.reserve(scope.key, entry_id, gate_vector)
            return self._miss(reason="below-gate" if matches else None, stage="gate", floor=floor,
                              gate_similarity=best_gate,
                              gate_threshold=self.gate_threshold, vectors=QueryVectors(query, gate_vector, None))
        entries = [c for c in await self._fetch([(m.id, m.similarity, 0.0) for m in passing], now)
                   if c.entry.scope_key == scope.key]
        likely = best_gate is not None and best_gate >= self.eager_gate_similarity
        early = self._start_embedding(query) if eager and likely and self._verifier is not None and entries else None
        outlooks: dict[str, Outlook] = {}
        if self._verifier is not None and entries:
            if len(query) <= INLINE_PRECHECK_CHARS and all(len(c.entry.query or "") <= INLINE_PRECHECK_CHARS
                                                           for c in entries):
                outlooks, refused = self._precheck(query, entries, floor)
            else:
                outlooks, refused = await asyncio.to_thread(self._precheck, query, entries, floor)
            entries = [c for c in entries if c.entry.id not in refused]
            if not entries:  # the verifier refuses every candidate whatever its cosine: no transformer
                verdict = next(iter(refused.values()))
                return self._miss(reason=verdict.reason, stage="verifier", candidates=len(refused), floor=floor,
                                  gate_similarity=best_gate,
                                  gate_threshold=self.gate_threshold, verifier_score=verdict.score,
                                  verifier_reason=verdict.reason, vectors=QueryVectors(query, gate_vector, None))
        dense, candidates = await self._rerank(query, entries, early)
        vectors = QueryVectors(query, gate_vector, dense)
        return await self._decide(scope, query, candidates, vectors, floor, now, best_gate, outlooks)

    def _precheck(
        self, query: str, entries: list[_Candidate], floor: float
    ) -> tuple[dict[str, Outlook], dict[str, Verdict]]:
        """(each candidate's verdict at every cosine from the floor, the candidates refused whatever their
        cosine); on the loop for short texts, else in a thread."""
        assert self._verifier is not None
        outlooks: dict[str, Outlook] = {}
        refused: dict[str, Verdict] = {}
        for c in entries:
            view = self._verifier.view(query, c.entry.query or "")
            outlook = outlooks[c.entry.id] = self._verifier.outlook(view, min_similarity=floor)
            if not outlook.best.accept:
                refused[c.entry.id] = outlook.best
        return outlooks, refused

    async def _fetch(
        self, found: list[tuple[str, float | None, float]], now: float
    ) -> list[_Candidate]:
        out: list[_Candidate] = []
        for entry_id, gate_similarity, similarity in found:
            entry = await self._store.get(entry_id, now)
            if entry is not None and entry.query is not None:
                out.append(_Candidate(entry, gate_similarity, similarity))
        return out

    def _start_embedding(self, query: str) -> asyncio.Task[np.ndarray]:
        """The query's transformer run, started now (an embedder with ``begin``; else at the caller's next await)
        and awaited later, or never: its vector then only warms the embedder's LRU, and a failure is dropped."""
        assert self._embedder is not None
        begin = getattr(self._embedder, "begin", None)
        if begin is None:
            task = asyncio.ensure_future(self._embed([query]))
        else:
            started = begin([query])
            started.add_done_callback(_consume)
            task = asyncio.ensure_future(_translated(started))
        task.add_done_callback(_consume)
        return task

    async def _rerank(
        self, query: str, found: list[_Candidate], early: asyncio.Task[np.ndarray] | None = None
    ) -> tuple[np.ndarray, list[_Candidate]]:
        """The query's transformer vector, and the candidates by transformer cosine, best first. Candidates
        without a kept transformer vector are embedded in the same batch as the query, and the vector kept.
        ``early``: the query's run, already started (:meth:`_start_embedding`)."""
        missing = [c for c in found if c.entry.dense is None]
        texts = [c.entry.query or "" for c in missing]
        if early is None:
            vectors = await self._embed([query] + texts)
        elif texts:
            vectors = np.concatenate(await asyncio.gather(early, self._embed(texts)))
        else:
            vectors = await early
        computed = {c.entry.id: vectors[i + 1] for i, c in enumerate(missing)}
        for entry_id, vector in computed.items():
            await self._store.keep_dense(entry_id, vector)
        dense = vectors[0]
        ranked = []
        for c in found:
            stored = c.entry.dense if c.entry.dense is not None else computed[c.entry.id]
            ranked.append(_Candidate(c.entry, c.gate_similarity, float(stored @ dense)))
        ranked.sort(key=lambda c: -c.similarity)
        return dense, ranked

    async def _decide(
        self, scope: Scope, query: str, candidates: list[_Candidate], vectors: QueryVectors, floor: float,
        now: float, best_gate: float | None = None, outlooks: dict[str, Outlook] | None = None,
    ) -> LookupResult:
        """Serve the first candidate at or above the floor that the verifier accepts (``outlooks``: the
        verifier's verdicts already worked out for some candidates, read off here without a thread)."""
        details: dict[str, Any] = {"stage": "transformer", "floor": floor, "gate_similarity": best_gate,
                                   "gate_threshold": self.gate_threshold if self._gate else None,
                                   "vectors": vectors}
        if not candidates:
            return self._miss(**details)
        best = candidates[0].similarity
        rejected: str | None = None
        for candidate in candidates:
            entry = candidate.entry
            if candidate.similarity < floor and not (entry.query and same_question(query, entry.query)):
                break
            if entry.scope_key != scope.key:
                continue
            if self._verifier is not None:
                assert entry.query is not None
                outlook = (outlooks or {}).get(entry.id)
                if outlook is None:
                    verdict = await asyncio.to_thread(
                        self._verifier.check, query, entry.query, candidate.similarity, min_similarity=floor
                    )
                else:
                    known = outlook.at(candidate.similarity)
                    verdict = known if known is not None else await asyncio.to_thread(
                        self._verifier.decide, outlook.view, candidate.similarity, min_similarity=floor
                    )
                if rejected is None:
                    details.update(verifier_score=verdict.score, verifier_reason=verdict.reason)
                if not verdict.accept:
                    rejected = rejected or verdict.reason
                    continue
                details.update(verifier_score=verdict.score, verifier_reason=verdict.reason)
            await self._store.touch(entry.id, now)
            self._hits_semantic += 1
            return LookupResult("semantic", entry, candidate.similarity, best, len(candidates), rejected,
                                **details)
        if rejected is None and best < floor:
            rejected = "below-floor"
        return self._miss(best=best, candidates=len(candidates), reason=rejected, **details)

    def _reusable(self, lookup: LookupResult | None, query: str) -> QueryVectors | None:
        vectors = lookup.vectors if lookup is not None else None
        return vectors if vectors is not None and vectors.query == query else None

    async def _vectors_for_store(
        self, query: str, lookup: LookupResult | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(searched vector, transformer vector or None) for a new entry, reusing the lookup's."""
        known = self._reusable(lookup, query)
        dense = known.dense if known is not None else None
        if self._gate is None:
            if dense is None:
                dense = (await self._embed([query]))[0]
            return dense, dense
        gate = known.gate if known is not None and known.gate is not None else self._gate.embed(query)
        return gate, dense

    async def store(
        self,
        scope: Scope,
        body: dict[str, Any],
        query: str | None,
        response: dict[str, Any],
        *,
        ttl_seconds: float | None = None,
        lookup: LookupResult | None = None,
    ) -> CacheEntry:
        """Cache ``response`` for this request (replacing any entry with the same exact key). ``lookup``: this
        request's lookup result, whose vectors are reused (nothing is embedded twice)."""
        ttl = self.ttl_seconds if ttl_seconds is None else float(ttl_seconds)
        if ttl <= 0:
            raise CacheConfigError(f"ttl_seconds must be positive, got {ttl}")
        vector: np.ndarray | None = None
        dense: np.ndarray | None = None
        if query is not None and self.semantic_applicable(body, query):
            vector, dense = await self._vectors_for_store(query, lookup)
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
            dense=dense,
        )
        await self._store.put(entry, vector, now, dense=dense)
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
