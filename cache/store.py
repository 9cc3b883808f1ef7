"""Cache entries, the store interface, and the in-memory store (the embedded default).

A store keeps entries by id (the exact-tier key), their expiry, LRU order for capacity, and a vector index
per scope for the semantic tier. Policy (what to look up, what to accept) lives in
:class:`~cache.semantic.SemanticCache`; stores only keep and find things.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import orjson

from cache.errors import CacheConfigError
from cache.index import DEFAULT_ANN_MIN_ROWS, Match, VectorIndex


@dataclass(frozen=True)
class CacheEntry:
    """One cached response. ``id`` is the exact-tier key of the request that produced it."""

    id: str
    scope_key: str
    query: str | None  # last user message text (None: exact tier only)
    response: dict[str, Any]
    created_at: float
    expires_at: float
    namespace: str
    model: str
    #: The transformer's vector of ``query`` (unit float32), once some lookup or store has computed it.
    dense: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StoreCounts:
    entries: int
    scopes: int


@runtime_checkable
class CacheStore(Protocol):
    """What :class:`~cache.semantic.SemanticCache` needs from a backend.

    Every method may raise :class:`~cache.errors.CacheUnavailableError` (and nothing else foreign) when the
    backend cannot be reached. ``now`` comes from the cache's clock.
    """

    @property
    def backend(self) -> str: ...

    @property
    def capacity(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, entry_id: str, now: float) -> CacheEntry | None:
        """The live entry with this id, or None (an expired or vanished entry is forgotten)."""
        ...

    async def touch(self, entry_id: str, now: float) -> None:
        """Mark the entry as just used (LRU recency)."""
        ...

    async def search(self, scope_key: str, vector: np.ndarray, k: int, now: float) -> list[Match]:
        """The ``k`` nearest live entries of the scope, best first. Ids may be stale: check with get()."""
        ...

    def reserve(self, scope_key: str, entry_id: str, vector: np.ndarray) -> None:
        """A hint, right after a miss's ``search``: ``put`` will soon store ``entry_id`` with this ``vector``
        (the local index inserts it now, while that search's memory is warm). Never fails, never waits."""
        ...

    async def put(
        self, entry: CacheEntry, vector: np.ndarray | None, now: float, *, dense: np.ndarray | None = None
    ) -> None:
        """Insert or replace ``entry``; evict least-recently-used entries beyond capacity. ``vector`` is the
        searched one (the gate's), ``dense`` the transformer's when already known (kept with the entry)."""
        ...

    async def keep_dense(self, entry_id: str, dense: np.ndarray) -> None:
        """Keep the transformer vector of an existing entry (computed when it first was a candidate)."""
        ...

    async def clear(self, *, namespace: str | None = None, model: str | None = None) -> int:
        """Delete entries matching the filters (None: any); returns how many were deleted."""
        ...

    async def counts(self, now: float) -> StoreCounts: ...


def check_capacity(capacity: int) -> int:
    if capacity < 1:
        raise CacheConfigError(f"capacity must be at least 1, got {capacity}")
    return capacity


def matches(entry_namespace: str, entry_model: str, namespace: str | None, model: str | None) -> bool:
    return (namespace is None or entry_namespace == namespace) and (model is None or entry_model == model)


#: An entry as the memory store keeps it: (scope key, query, response as JSON bytes, created at, expires at,
#: namespace, model, transformer vector as float32 bytes or None). A plain tuple, not a class: the cyclic GC stops
#: tracking a tuple of strings, bytes, floats and None once it has seen it, so the entries add nothing to a full
#: collection (100,000 instances of a class would be walked by every one, with the event loop stopped).
_Record = tuple[str, "str | None", bytes, float, float, str, str, "bytes | None"]
_SCOPE: Final = 0
_QUERY: Final = 1
_RESPONSE: Final = 2
_CREATED: Final = 3
_EXPIRES: Final = 4
_NAMESPACE: Final = 5
_MODEL: Final = 6
_DENSE: Final = 7


def _record(entry: CacheEntry, dense: np.ndarray | None) -> _Record:
    """The response as JSON bytes (a third of the dict's memory), shared scope/namespace/model strings."""
    # orjson hands back bytes with a 4 KiB buffer: an exact-size copy keeps 100,000 entries ~350 MB smaller
    response = memoryview(orjson.dumps(entry.response)).tobytes()
    vector = None if dense is None else np.asarray(dense, dtype=np.float32).tobytes()
    return (sys.intern(entry.scope_key), entry.query, response, entry.created_at, entry.expires_at,
            sys.intern(entry.namespace), sys.intern(entry.model), vector)


def _entry(entry_id: str, record: _Record) -> CacheEntry:
    dense = None if record[_DENSE] is None else np.frombuffer(record[_DENSE], dtype=np.float32)
    return CacheEntry(entry_id, record[_SCOPE], record[_QUERY], orjson.loads(record[_RESPONSE]), record[_CREATED],
                      record[_EXPIRES], record[_NAMESPACE], record[_MODEL], dense)


class _ExpiryLog:
    """Every stored entry's expiry time, appended as entries are stored, so that finding the expired ones is one
    numpy comparison rather than a walk over every entry in Python (~15 ms at 100,000 entries, with the event loop
    stopped, at each ``/metrics`` scrape and each status-page poll). A row whose entry has since been replaced or
    evicted stays until it is due (``due`` reports it, and the store checks it against the entry) or until the log,
    grown to twice the entries, is rebuilt from them (~15-35 ms at 100,000 entries, once per 100,000 stores at
    capacity)."""

    def __init__(self) -> None:
        self._expires = np.full(1024, np.inf)
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, entry_id: str, expires_at: float) -> None:
        row = len(self._ids)
        if row == len(self._expires):
            self._expires = np.concatenate([self._expires, np.full(row, np.inf)])
        self._expires[row] = expires_at
        self._ids.append(entry_id)

    def due(self, now: float) -> list[tuple[str, float]]:
        """(id, expiry time) of every row due by ``now``, each reported once."""
        rows = np.flatnonzero(self._expires[: len(self._ids)] <= now)
        out = [(self._ids[row], float(self._expires[row])) for row in rows.tolist()]
        self._expires[rows] = np.inf
        return out

    def reset(self, ids: list[str], expires: np.ndarray) -> None:
        """Exactly these rows (the live entries), dropping those of replaced and evicted entries."""
        self._ids = ids
        self._expires = np.full(max(1024, 2 * len(ids)), np.inf)
        self._expires[: len(ids)] = expires


class MemoryStore:
    """Everything in this process: an LRU-ordered dict of entries plus a vector index."""

    def __init__(
        self, capacity: int = 100_000, *, dim: int | None = None,
        ann_min_rows: int | None = DEFAULT_ANN_MIN_ROWS, ann_dtype: str = "f16",
    ) -> None:
        self._capacity = check_capacity(capacity)
        self._entries: OrderedDict[str, _Record] = OrderedDict()  # oldest use first
        self._scope_sizes: dict[str, int] = {}
        self._expiry = _ExpiryLog()
        self._index = VectorIndex(dim, ann_min_rows=ann_min_rows, ann_dtype=ann_dtype)

    @property
    def backend(self) -> str:
        return "memory"

    @property
    def capacity(self) -> int:
        return self._capacity

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _delete(self, entry_id: str) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        self._index.remove(entry_id)
        scope_key = entry[_SCOPE]
        left = self._scope_sizes[scope_key] - 1
        if left:
            self._scope_sizes[scope_key] = left
        else:
            del self._scope_sizes[scope_key]

    async def get(self, entry_id: str, now: float) -> CacheEntry | None:
        record = self._entries.get(entry_id)
        if record is None:
            return None
        if record[_EXPIRES] <= now:
            self._delete(entry_id)
            return None
        return _entry(entry_id, record)

    async def touch(self, entry_id: str, now: float) -> None:
        if entry_id in self._entries:
            self._entries.move_to_end(entry_id)

    async def search(self, scope_key: str, vector: np.ndarray, k: int, now: float) -> list[Match]:
        for entry_id in self._index.purge_expired(scope_key, now):
            self._delete(entry_id)
        return self._index.search(scope_key, vector, k, now)

    def reserve(self, scope_key: str, entry_id: str, vector: np.ndarray) -> None:
        self._index.reserve(scope_key, entry_id, vector)

    async def put(
        self, entry: CacheEntry, vector: np.ndarray | None, now: float, *, dense: np.ndarray | None = None
    ) -> None:
        self._delete(entry.id)
        record = _record(entry, dense if dense is not None else entry.dense)
        if vector is not None:
            self._index.add(record[_SCOPE], entry.id, vector, entry.expires_at)
        self._entries[entry.id] = record
        self._scope_sizes[entry.scope_key] = self._scope_sizes.get(entry.scope_key, 0) + 1
        self._expiry.add(entry.id, entry.expires_at)
        if len(self._expiry) > 2 * len(self._entries) + 1024:  # rows of replaced and evicted entries
            self._rebuild_expiry()
        while len(self._entries) > self._capacity:
            oldest = next(iter(self._entries))
            self._delete(oldest)

    async def keep_dense(self, entry_id: str, dense: np.ndarray) -> None:
        record = self._entries.get(entry_id)
        if record is not None:  # replacing a key's value keeps its place in the LRU order
            self._entries[entry_id] = (*record[:_DENSE], np.asarray(dense, dtype=np.float32).tobytes())

    async def clear(self, *, namespace: str | None = None, model: str | None = None) -> int:
        doomed = [i for i, r in self._entries.items() if matches(r[_NAMESPACE], r[_MODEL], namespace, model)]
        for entry_id in doomed:
            self._delete(entry_id)
        return len(doomed)

    def _rebuild_expiry(self) -> None:
        expires = np.fromiter(map(itemgetter(_EXPIRES), self._entries.values()), np.float64, len(self._entries))
        self._expiry.reset(list(self._entries), expires)

    def _holds(self, entry_id: str, expires_at: float) -> bool:
        """Whether the entry stored under ``entry_id`` is the one that expires at ``expires_at``."""
        record = self._entries.get(entry_id)
        return record is not None and record[_EXPIRES] == expires_at

    async def counts(self, now: float) -> StoreCounts:
        for entry_id, expires_at in self._expiry.due(now):
            if self._holds(entry_id, expires_at):
                self._delete(entry_id)
        return StoreCounts(entries=len(self._entries), scopes=len(self._scope_sizes))
