"""The replay's one expensive pass: scope and key every request, embed every query once, find each query's
nearest earlier entries of the same scope, and judge candidates with the real verifier (lazily, once each).

The real cache code decides what may match: :func:`cache.scope.build_scope` and :func:`cache.scope.exact_key`
(what must match exactly), :meth:`cache.semantic.SemanticCache.semantic_applicable`'s rule (a plain-text last
user message, temperature at most ``max_semantic_temperature``), the configured embedder (batches of
``EMBED_CHUNK`` texts, each distinct text once) and :meth:`cache.verify.Verifier.check`. The live index is
replaced by one blocked matrix product per scope: an *item* is a distinct exact key, ordered by its first
request, and its candidates are the ``depth`` most similar items first seen before it plus the ``depth`` most
similar of all (for its repeats). Nothing is written to any live cache, and nothing is sent upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from cache.replay.records import ReplayRequest
from cache.scope import build_scope, exact_key
from cache.semantic import request_temperature

if TYPE_CHECKING:
    from cache.embedder import Embedder
    from cache.verify import Verifier

EMBED_CHUNK = 512
BLOCK = 256  # query rows per matrix product
#: Progress callback: (phase, done, total).
Progress = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    return None


@dataclass
class Items:
    """Distinct exact keys, in order of first request."""

    ids: dict[str, int] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)
    query: list[str | None] = field(default_factory=list)
    semantic: list[bool] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)  # the label of the item's first request

    def add(self, key: str, scope: str, query: str | None, semantic: bool, label: str | None) -> int:
        index = self.ids.get(key)
        if index is None:
            index = self.ids[key] = len(self.scope)
            self.scope.append(scope)
            self.query.append(query)
            self.semantic.append(semantic)
            self.label.append(label)
        return index


@dataclass
class Prepared:
    requests: list[ReplayRequest]
    item_of: list[int]  # request -> item
    items: Items
    candidates: list[list[tuple[int, float]]]  # item -> (earlier item, cosine), best first
    embedded: int  # distinct texts embedded

    @property
    def n_items(self) -> int:
        return len(self.items.scope)


def lossless(body: dict[str, Any]) -> dict[str, Any]:
    """The body as deja looks it up after its lossless compression pass (unchanged if that refuses it)."""
    from compression import CompressionError, normalize_messages

    try:
        return {**body, "messages": normalize_messages(body["messages"])}
    except (CompressionError, TypeError, ValueError, AttributeError):
        return body


def key_requests(requests: Sequence[ReplayRequest], max_semantic_temperature: float,
                 normalize: bool = True) -> tuple[list[int], Items]:
    """Each request's item (its exact key), with its scope key, query and whether the semantic tier applies;
    ``normalize``: first apply compression's lossless pass, as live lookups do (compression not ``off``)."""
    items, item_of = Items(), []
    for request in requests:
        body = lossless(request.body) if normalize else request.body
        scope, query = build_scope(body, tenant=request.tenant, namespace=request.namespace)
        temperature = request_temperature(body)
        semantic = query is not None and temperature is not None and temperature <= max_semantic_temperature
        item_of.append(items.add(exact_key(scope, body), scope.key, query, semantic, request.label))
    return item_of, items


async def embed_texts(embedder: Embedder, texts: Sequence[str], progress: Progress = _quiet) -> np.ndarray:
    """(len(texts), dim) float32 from the embedder, in chunks (the embedder batches each chunk)."""
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    progress("embed", 0, len(texts))
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = texts[start : start + EMBED_CHUNK]
        out[start : start + len(chunk)] = await embedder.embed(list(chunk))
        progress("embed", start + len(chunk), len(texts))
    return out


def _top(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns of the ``k`` highest finite values, best first (-1 / -inf pad)."""
    k = min(k, block.shape[1])
    if k == 0:
        return np.zeros((len(block), 0), np.int64), np.zeros((len(block), 0), block.dtype)
    top = np.argpartition(block, -k, axis=1)[:, -k:] if k < block.shape[1] else \
        np.tile(np.arange(block.shape[1]), (len(block), 1))
    sims = np.take_along_axis(block, top, axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")
    top, sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(sims, order, axis=1)
    top[~np.isfinite(sims)] = -1
    return top, sims


def neighbours(vectors: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
    """For row i: the ``depth`` rows j < i of highest cosine and the ``depth`` rows j > i of highest cosine,
    merged best first. The earlier ones are exact for a row's first request (only rows first seen earlier can
    be stored then); the later ones serve its repeats, which may meet rows first seen since."""
    n = len(vectors)
    out: list[list[tuple[int, float]]] = []
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        with threadpool_limits(limits=1, user_api="blas"):  # on a busy small box, 2x faster than BLAS threads
            block = vectors[start:stop] @ vectors.T
        square = block[:, start:stop]  # the rows against themselves: j < i is earlier, j > i later
        lower = np.tril(np.ones(square.shape, dtype=bool))
        earlier, later = block[:, :stop].copy(), block[:, start:]
        earlier[:, start:stop][~np.tril(lower, -1)] = -np.inf
        square[lower] = -np.inf  # a view into ``later``: only rows first seen after
        early_ids, early_sims = _top(earlier, depth)
        late_ids, late_sims = _top(later, depth)
        late_ids = np.where(late_ids >= 0, late_ids + start, -1)
        for r in range(stop - start):
            merged = [(int(j), float(x)) for j, x in zip(early_ids[r], early_sims[r], strict=True) if j >= 0]
            merged += [(int(j), float(x)) for j, x in zip(late_ids[r], late_sims[r], strict=True) if j >= 0]
            merged.sort(key=lambda m: -m[1])
            out.append(merged)
    return out


async def prepare(
    requests: Sequence[ReplayRequest],
    embedder: Embedder,
    *,
    depth: int = 10,
    max_semantic_temperature: float = 1.0,
    normalize: bool = True,
    progress: Progress = _quiet,
) -> Prepared:
    """Key, embed and pair every request; the sweep then only reads these tables."""
    item_of, items = key_requests(requests, max_semantic_temperature, normalize)
    progress("keys", len(requests), len(requests))
    semantic_items = [i for i, ok in enumerate(items.semantic) if ok]
    # by length: each embedding batch then pads little
    texts = sorted({q for i in semantic_items if (q := items.query[i]) is not None}, key=lambda t: (len(t), t))
    row_of = {t: r for r, t in enumerate(texts)}
    vectors = await embed_texts(embedder, texts, progress) if texts else np.zeros((0, embedder.dim), np.float32)
    candidates: list[list[tuple[int, float]]] = [[] for _ in items.scope]
    by_scope: dict[str, list[int]] = {}
    for i in semantic_items:
        by_scope.setdefault(items.scope[i], []).append(i)
    done = 0
    progress("neighbours", 0, len(semantic_items))
    for members in by_scope.values():
        matrix = vectors[[row_of[items.query[i] or ""] for i in members]]
        for item, near in zip(members, neighbours(matrix, depth), strict=True):
            candidates[item] = [(members[j], sim) for j, sim in near]
        done += len(members)
        progress("neighbours", done, len(semantic_items))
    return Prepared(list(requests), item_of, items, candidates, len(texts))


@dataclass(frozen=True)
class Judgement:
    """The verifier's view of one (query, cached question) pair, whatever the floor."""

    accept: bool
    score: float
    reason: str


class Verdicts:
    """``Verifier.check`` on each (item, candidate) pair at most once, with the floor left to the sweep."""

    def __init__(self, prepared: Prepared, verifier: Verifier) -> None:
        self._queries = prepared.items.query
        self._verifier = verifier
        self._memo: dict[tuple[int, int], Judgement] = {}

    def __call__(self, item: int, candidate: int, similarity: float) -> Judgement:
        key = (item, candidate)
        judgement = self._memo.get(key)
        if judgement is None:
            query, cached = self._queries[item], self._queries[candidate]
            assert query is not None and cached is not None
            verdict = self._verifier.check(query, cached, similarity, min_similarity=-2.0)
            judgement = self._memo[key] = Judgement(verdict.accept, verdict.score, verdict.reason)
        return judgement

    @property
    def checked(self) -> int:
        return len(self._memo)
