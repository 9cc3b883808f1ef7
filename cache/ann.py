"""One large scope of the vector index as an HNSW graph (``usearch``), for :class:`cache.index.VectorIndex`.

Rows are stored as ``dtype`` in the graph: "i8" (a quarter of float32's memory; its cosines are off by up to
~0.01, fine for the gate's 0.85) or "f16" (~0.001, for transformer vectors compared with a 0.97 floor). Entry ids map to
integer keys that are never reused, so a replaced row can never be confused with its predecessor, and keys grow
with time. A removed row is a tombstone: it is forgotten by the scope (searches skip it) but stays in the graph,
because usearch's own ``remove`` could spin for minutes on a graph under churn (a soak at capacity froze the
server in it). Expiry is a heap with lazy deletion. Searches ask for more neighbours than requested (dead rows take
some of the places) and run on one thread (the caller's).

**Nothing is ever built in one go.** usearch holds the GIL while it inserts (~0.3 ms a row at 100,000 rows here),
and the scope runs on the event loop: building a graph of 100,000 rows at once would stop every request for half
a minute. So a new graph is filled a few rows at a time (:data:`MOVE_PER_ADD` per insert, newest rows first, since
the oldest are the next to be evicted), while the rows not yet moved stay where they were and are searched there:

- a scope that outgrows the exact matrix (:class:`cache.index.VectorIndex`) starts as an empty graph beside a copy
  of the matrix (:meth:`AnnScope.from_rows`);
- once the graph holds as many dead rows as live ones (a full cache evicts one row per insert), a fresh graph is
  started beside it and the live rows move over; then the old graph is dropped, so memory stays bounded.

The old graph is asked for more neighbours the fewer of its rows still wait (the rest are dead or have moved);
once that would pass :data:`MAX_OLD_NEIGHBOURS`, its last waiting rows are copied out and searched exactly, as the
outgrown matrix is.

**A miss's row goes in right after its search** (:meth:`AnnScope.reserve`). Both walk the same part of the graph,
and an insert made with that part still in the CPU's caches costs about 0.32 ms here against 0.55 ms once other
requests' work has pushed it out, as it had by the time the answer came back (``benchmarks/warm_insert.py``). The
reserved row is not an entry yet: searches skip it, like a dead row, until the answer's ``add`` claims it (same
entry id, same vector). A reservation that is never claimed (the upstream failed, the answer was not cacheable)
is dropped as a dead row once :data:`MAX_RESERVED` newer ones wait.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from cache.blas import nearest_rows

_Index: Any
try:
    from usearch.index import Index as _Index
except ImportError:  # pragma: no cover - depends on the environment
    _Index = None

#: Links per row. 32 rather than usearch's 16: at 100,000 gate rows the graph returned a question's near-duplicate
#: first for 289 of 299 questions instead of 280, for 12 MiB more graph (as saved) and about 15% more time per search
#: and per insert (``benchmarks/gate_recall.py``).
CONNECTIVITY = 32
EXPANSION_ADD = 64
EXPANSION_SEARCH = 64
#: Rows moved from the previous graph (or matrix) to the one being built, per insert.
MOVE_PER_ADD = 4
#: A graph is rebuilt once it holds more dead rows than this and than live ones.
MIN_DEAD_TO_REBUILD = 256
#: The most neighbours a search asks of a graph being replaced; past that, its last waiting rows are searched
#: exactly (at most ~17,000 at 100,000 rows, top_k 5).
MAX_OLD_NEIGHBOURS = 256
#: Reserved rows waiting for their answer (a few per request in flight); past this, the oldest count as dead.
MAX_RESERVED = 1024


def ann_available() -> bool:
    return _Index is not None


class _Source(Protocol):
    """Rows waiting to move to the new graph: searched where they are until they have moved."""

    def vectors(self, keys: list[int]) -> np.ndarray: ...

    def drop(self, key: int) -> None:
        """The row has moved or was removed: searches need not find it here any more."""
        ...

    def search(self, query: np.ndarray, count: int) -> tuple[list[int], list[float]]:
        """Up to ``count`` nearest keys with their cosines (a graph's may include rows no longer waiting)."""
        ...


class _OldGraph:
    """The graph being replaced. Its dead rows (and, as the build goes on, the rows that have moved) take some of
    the nearest places, so a search asks it for more the fewer rows still wait (see ``AnnScope.search``)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.rows = len(graph)

    def vectors(self, keys: list[int]) -> np.ndarray:
        return np.asarray(self.graph.get(np.asarray(keys, dtype=np.uint64), dtype=np.float32), dtype=np.float32)

    def drop(self, key: int) -> None:
        return None

    def search(self, query: np.ndarray, count: int) -> tuple[list[int], list[float]]:
        found = self.graph.search(query, min(self.rows, count), threads=1)
        return found.keys.tolist(), [1.0 - float(d) for d in found.distances.tolist()]


class _OldRows:
    """Waiting rows searched exactly: the matrix a scope outgrew, or the last rows of a graph being replaced.
    ``keys`` ascending."""

    def __init__(self, keys: list[int], vectors: np.ndarray) -> None:
        self.keys = np.asarray(keys, dtype=np.int64)
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), -1)
        self.live = np.ones(len(keys), dtype=bool)
        self.left = len(keys)

    def _row(self, key: int) -> int | None:
        row = int(np.searchsorted(self.keys, key))
        return row if row < len(self.keys) and int(self.keys[row]) == key else None

    def vectors(self, keys: list[int]) -> np.ndarray:
        return self.matrix[np.searchsorted(self.keys, keys)]

    def drop(self, key: int) -> None:
        row = self._row(key)
        if row is not None and self.live[row]:
            self.live[row] = False
            self.left -= 1

    def search(self, query: np.ndarray, count: int) -> tuple[list[int], list[float]]:
        count = min(count, self.left)
        if count <= 0:
            return [], []
        top, sims = nearest_rows(self.matrix, query, count, self.live)
        return self.keys[top].tolist(), sims[top].tolist()


class AnnScope:
    """The rows of one scope in an HNSW graph. Not thread-safe (like the rest of the index)."""

    def __init__(self, dim: int, dtype: str = "f16") -> None:
        if _Index is None:  # pragma: no cover - guarded by ann_available()
            raise RuntimeError("usearch is not installed")
        self._dim, self._dtype = dim, dtype
        self._index: Any = self._graph()
        self._dead = 0  # dead rows in ``_index``
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}  # live keys, as remembered (ascending but for claimed reservations)
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._next_key = 0
        # While a graph is being built: rows with a key below ``_cut`` that are still in ``_to_move`` (ascending;
        # moved from the end) live in ``_old``; every other live row is in ``_index``.
        self._old: _Source | None = None
        self._cut = 0
        self._to_move: list[int] = []
        self._waiting_count = 0  # live rows still waiting in ``_old``
        # Rows in ``_index`` for answers not stored yet: entry id -> (key, unit vector); oldest first.
        self._reserved: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()

    @classmethod
    def from_rows(cls, ids: list[str], vectors: np.ndarray, expires: np.ndarray, dtype: str = "f16") -> AnnScope:
        """A scope taking over an exact matrix's rows: they move into the graph a few per insert."""
        scope = cls(int(vectors.shape[1]), dtype)
        keys = scope._keys(len(ids)).tolist()  # 0 .. n-1: the matrix's rows in order
        for entry_id, key, expires_at in zip(ids, keys, expires.tolist(), strict=True):
            scope._remember(entry_id, key, float(expires_at))
        scope._old, scope._cut, scope._to_move = _OldRows(keys, vectors), scope._next_key, list(keys)
        scope._waiting_count = len(keys)
        return scope

    def _graph(self) -> Any:
        return _Index(ndim=self._dim, metric="cos", dtype=self._dtype, connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)

    def __len__(self) -> int:
        return len(self._key_of)

    @property
    def building(self) -> bool:
        """Whether rows are still moving into a new graph."""
        return self._old is not None

    def _keys(self, count: int) -> np.ndarray:
        keys = np.arange(self._next_key, self._next_key + count, dtype=np.uint64)
        self._next_key += count
        return keys

    def _waiting(self, key: int) -> bool:
        """Whether ``key`` is still in the old graph or matrix."""
        return self._old is not None and key < self._cut and bool(self._to_move) and key <= self._to_move[-1]

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
        key = self._claim(entry_id, unit)
        if key is None:
            key = self._insert(unit)
        self._remember(entry_id, key, expires_at)
        self._move(MOVE_PER_ADD)

    def reserve(self, entry_id: str, unit: np.ndarray) -> None:
        """Insert the row of an entry about to be stored (its lookup just searched with ``unit``), for
        :meth:`add` to claim; see the module's docstring."""
        if entry_id in self._reserved:
            return
        self._reserved[entry_id] = (self._insert(unit), unit)
        if len(self._reserved) > MAX_RESERVED:
            self._reserved.popitem(last=False)
            self._bury()

    def _insert(self, unit: np.ndarray) -> int:
        """A new row in the current graph, under a new key."""
        key = int(self._keys(1)[0])
        self._index.add(key, unit, threads=1)
        return key

    @property
    def reserved(self) -> int:
        """Rows reserved and not claimed yet."""
        return len(self._reserved)

    def _claim(self, entry_id: str, unit: np.ndarray) -> int | None:
        """The key of ``entry_id``'s reserved row when it holds this vector (else it is dead, and None)."""
        held = self._reserved.pop(entry_id, None)
        if held is None:
            return None
        key, reserved = held
        if np.array_equal(reserved, unit):
            return key
        self._bury()
        return None

    def _bury(self) -> None:
        """One more dead row in the current graph; once they outnumber the live ones, start a new graph."""
        self._dead += 1
        if self._old is None and self._dead > max(len(self._key_of), MIN_DEAD_TO_REBUILD):
            self._start_rebuild()

    def _move(self, rows: int) -> None:
        """Move up to ``rows`` live rows (newest first) from the old graph or matrix into the new graph."""
        if self._old is None:
            return
        keys: list[int] = []
        while self._to_move and len(keys) < rows:
            key = self._to_move.pop()
            if key in self._id_of:  # else removed since the move began
                keys.append(key)
        if keys:
            self._index.add(np.asarray(keys, dtype=np.uint64), np.ascontiguousarray(self._old.vectors(keys)),
                            threads=1)
            for key in keys:
                self._old.drop(key)
            self._waiting_count -= len(keys)
        if not self._to_move:
            self._old, self._to_move = None, []

    def _start_rebuild(self) -> None:
        """A fresh graph for new rows; the live ones move into it a few per insert, the dead (and the reserved,
        whose answers will be inserted afresh) stay behind."""
        self._old, self._cut = _OldGraph(self._index), self._next_key
        # ascending, as ``_waiting`` needs; nearly sorted already (a claimed reservation's key is a little older
        # than the rows remembered while its answer was on the way), which the sort runs through in linear time
        self._to_move = sorted(self._id_of)
        self._reserved.clear()
        self._waiting_count = len(self._to_move)
        self._index, self._dead = self._graph(), 0

    def remove(self, entry_id: str) -> bool:
        key = self._key_of.pop(entry_id, None)
        if key is None:
            return False
        del self._id_of[key]
        del self._expires[entry_id]
        if self._old is not None and self._waiting(key):  # a row still in the old store is dropped with it
            self._old.drop(key)
            self._waiting_count -= 1
        else:
            self._bury()
        return True

    def _search_old(self, query: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        """The nearest rows still waiting. From a graph, ask for enough neighbours that the rows it no longer
        serves (dead, or moved) leave about as much room as a graph half dead did (the most a live graph holds);
        once that is more than :data:`MAX_OLD_NEIGHBOURS`, copy the few rows still waiting out and search them
        exactly from then on."""
        assert self._old is not None
        if isinstance(self._old, _OldGraph):
            wanted = -(-(5 * k + 18) * self._old.rows // (2 * max(1, self._waiting_count)))
            if wanted <= MAX_OLD_NEIGHBOURS:
                return self._old.search(query, wanted)
            waiting = [key for key in self._to_move if key in self._id_of]
            self._old, self._to_move = _OldRows(waiting, self._old.vectors(waiting)), waiting
        return self._old.search(query, k)

    def expires_of(self, entry_id: str) -> float | None:
        return self._expires.get(entry_id)

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
        # dead and reserved rows may take some of the nearest places
        wanted = k + 2 + min(self._dead + len(self._reserved), 4 * k + 16)
        out: list[tuple[str, float]] = []
        if len(self._index):
            found = self._index.search(query, min(len(self._index), wanted), threads=1)
            for key, distance in zip(found.keys.tolist(), found.distances.tolist(), strict=True):
                entry_id = self._id_of.get(int(key))
                if entry_id is not None:
                    out.append((entry_id, 1.0 - float(distance)))
        if self._old is not None and self._to_move:
            keys, sims = self._search_old(query, k)
            for key, similarity in zip(keys, sims, strict=True):
                entry_id = self._id_of.get(int(key))
                if entry_id is not None and self._waiting(int(key)):
                    out.append((entry_id, float(similarity)))
        out.sort(key=lambda pair: -pair[1])
        return out[:k]
