"""One large scope of the vector index as an HNSW graph (``usearch``), for :class:`cache.index.VectorIndex`.

Rows are stored as ``dtype`` in the graph: "i8" (a quarter of float32's memory; its cosines are off by up to
~0.01, fine for the gate's 0.85) or "f16" (~0.001, for transformer vectors compared with a 0.97 floor). Entry ids map to
integer keys that are never reused, so a replaced row can never be confused with its predecessor. A removed row is
a tombstone: it is forgotten by the scope (searches skip it) but stays in the graph, because usearch's own
``remove`` could spin for minutes on a graph under churn (a soak at capacity froze the server in it); once the
graph holds as many dead rows as live ones it is rebuilt from the live rows, so memory stays bounded. Expiry is a
heap with lazy deletion. Searches ask for more neighbours than requested (dead rows take some of the places) and
run on one thread (the caller's).
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

_Index: Any
try:
    from usearch.index import Index as _Index
except ImportError:  # pragma: no cover - depends on the environment
    _Index = None

CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 64


def ann_available() -> bool:
    return _Index is not None


class AnnScope:
    """The rows of one scope in an HNSW graph. Not thread-safe (like the rest of the index)."""

    def __init__(self, dim: int, dtype: str = "f16") -> None:
        if _Index is None:  # pragma: no cover - guarded by ann_available()
            raise RuntimeError("usearch is not installed")
        self._dim, self._dtype = dim, dtype
        self._index: Any = self._graph()
        self._dead = 0
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._next_key = 0

    def _graph(self) -> Any:
        return _Index(ndim=self._dim, metric="cos", dtype=self._dtype, connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)

    def _rebuild(self) -> None:
        """A fresh graph of the live rows only (their stored, quantised vectors: cosine ignores the scale)."""
        keys = np.fromiter(self._id_of, dtype=np.uint64, count=len(self._id_of))
        graph = self._graph()
        if len(keys):
            vectors = np.asarray(self._index.get(keys, dtype=np.float32), dtype=np.float32)
            graph.add(keys, np.ascontiguousarray(vectors), threads=1)
        self._index, self._dead = graph, 0

    def __len__(self) -> int:
        return len(self._key_of)

    def _keys(self, count: int) -> np.ndarray:
        keys = np.arange(self._next_key, self._next_key + count, dtype=np.uint64)
        self._next_key += count
        return keys

    def add_many(self, ids: list[str], vectors: np.ndarray, expires: np.ndarray) -> None:
        """Rows known to be new (a scope being promoted)."""
        keys = self._keys(len(ids))
        self._index.add(keys, np.ascontiguousarray(vectors, dtype=np.float32), threads=1)
        for entry_id, key, expires_at in zip(ids, keys.tolist(), expires.tolist(), strict=True):
            self._remember(entry_id, int(key), float(expires_at))

    def _remember(self, entry_id: str, key: int, expires_at: float) -> None:
        self._key_of[entry_id] = key
        self._id_of[key] = entry_id
        self._expires[entry_id] = expires_at
        heapq.heappush(self._heap, (expires_at, entry_id))
        if len(self._heap) > 2 * len(self._key_of) + 64:  # drop stale heap items now and then
            self._heap = [(e, i) for i, e in self._expires.items()]
            heapq.heapify(self._heap)

    def add(self, entry_id: str, unit: np.ndarray, expires_at: float) -> None:
        self.remove(entry_id)
        key = int(self._keys(1)[0])
        self._index.add(key, unit, threads=1)
        self._remember(entry_id, key, expires_at)

    def remove(self, entry_id: str) -> bool:
        key = self._key_of.pop(entry_id, None)
        if key is None:
            return False
        del self._id_of[key]
        del self._expires[entry_id]
        self._dead += 1
        if self._dead > max(len(self._key_of), 256):
            self._rebuild()
        return True

    def expired(self, now: float) -> list[str]:
        gone: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, entry_id = heapq.heappop(self._heap)
            if self._expires.get(entry_id) == expires_at:
                gone.append(entry_id)
        return gone

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        if not self._key_of or k <= 0:
            return []
        wanted = k + 2 + min(self._dead, 4 * k + 16)  # dead rows may take some of the nearest places
        found = self._index.search(query, min(len(self._key_of) + self._dead, wanted), threads=1)
        out: list[tuple[str, float]] = []
        for key, distance in zip(found.keys.tolist(), found.distances.tolist(), strict=True):
            entry_id = self._id_of.get(int(key))
            if entry_id is not None:
                out.append((entry_id, 1.0 - float(distance)))
        out.sort(key=lambda pair: -pair[1])
        return out[:k]
