"""A local, in-process vector index: per scope, L2-normalised float32 rows searched by cosine.

Used directly by :class:`~cache.store.MemoryStore`, and by :class:`~cache.redis_store.RedisStore` as each
replica's local mirror of the vectors held in Redis. A scope starts as a numpy matrix searched exactly (one
matrix-vector product); once it holds ``ann_min_rows`` rows it moves to an HNSW graph (``usearch``, int8
vectors, ~0.2 ms per search at 100,000 rows where the product costs 10+ ms on a busy 2-core machine). HNSW is
approximate: at 100,000 real questions the nearest row is found ~98% of the time. No graph is built in one go
on the event loop: rows move into it a few per insert (:mod:`cache.ann`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.ann import AnnScope, ann_available
from cache.blas import nearest_rows
from cache.errors import CacheConfigError

_INITIAL_ROWS = 16
#: A scope this large moves to the HNSW index (measured: the exact product costs ~0.3 ms at this size here).
DEFAULT_ANN_MIN_ROWS = 2048


@dataclass(frozen=True)
class Match:
    """One candidate from a vector search."""

    id: str
    similarity: float


def normalize(vector: np.ndarray) -> np.ndarray:
    """A float32 copy of ``vector`` with unit L2 norm (zero vectors stay zero)."""
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 0 else flat.copy()


class _ScopeMatrix:
    """The rows of one scope. Deletion swaps the last row in, so rows stay dense."""

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((_INITIAL_ROWS, dim), dtype=np.float32)
        self.expires = np.zeros(_INITIAL_ROWS, dtype=np.float64)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, entry_id: str, vector: np.ndarray, expires_at: float) -> None:
        row = self.rows.get(entry_id)
        if row is None:
            row = len(self.ids)
            if row == self.vectors.shape[0]:
                self._grow()
            self.ids.append(entry_id)
            self.rows[entry_id] = row
        self.vectors[row] = vector
        self.expires[row] = expires_at

    def rows_of(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        size = len(self.ids)
        return self.ids, self.vectors[:size], self.expires[:size]

    def _grow(self) -> None:
        rows = self.vectors.shape[0] * 2
        vectors = np.zeros((rows, self.vectors.shape[1]), dtype=np.float32)
        vectors[: len(self.ids)] = self.vectors[: len(self.ids)]
        expires = np.zeros(rows, dtype=np.float64)
        expires[: len(self.ids)] = self.expires[: len(self.ids)]
        self.vectors, self.expires = vectors, expires

    def remove(self, entry_id: str) -> bool:
        row = self.rows.pop(entry_id, None)
        if row is None:
            return False
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.vectors[row] = self.vectors[last]
            self.expires[row] = self.expires[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()
        return True

    def expires_of(self, entry_id: str) -> float | None:
        row = self.rows.get(entry_id)
        return float(self.expires[row]) if row is not None else None

    def expired(self, now: float) -> list[str]:
        size = len(self.ids)
        return [self.ids[i] for i in np.flatnonzero(self.expires[:size] <= now)]

    def search(self, query: np.ndarray, k: int) -> list[Match]:
        size = len(self.ids)
        if size == 0 or k <= 0:
            return []
        order, sims = nearest_rows(self.vectors[:size], query, k)
        return [Match(self.ids[i], float(sims[i])) for i in order]


def _promote(matrix: _ScopeMatrix, dtype: str) -> AnnScope:
    """An HNSW scope taking over the matrix's rows (they move into the graph a few per insert, see cache.ann)."""
    ids, vectors, expires = matrix.rows_of()
    return AnnScope.from_rows(list(ids), vectors, expires, dtype)


class VectorIndex:
    """Vectors grouped by scope key; every entry id lives in at most one scope."""

    def __init__(
        self, dim: int | None = None, *, ann_min_rows: int | None = DEFAULT_ANN_MIN_ROWS, ann_dtype: str = "f16"
    ) -> None:
        """``ann_min_rows``: the size at which a scope moves to HNSW (None: never; also when usearch is missing);
        ``ann_dtype``: how HNSW stores rows ("f16", or "i8" for the gate's vectors, see :mod:`cache.ann`)."""
        self._dim = dim
        self._ann_dtype = ann_dtype
        self._ann_min = ann_min_rows if ann_available() else None
        self._scopes: dict[str, _ScopeMatrix | AnnScope] = {}
        self._scope_of: dict[str, str] = {}

    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._scope_of

    @property
    def scope_count(self) -> int:
        return len(self._scopes)

    def _check(self, vector: np.ndarray) -> np.ndarray:
        unit = normalize(vector)
        if self._dim is None:
            self._dim = unit.shape[0]
        if unit.shape[0] != self._dim:
            raise CacheConfigError(f"vector has dimension {unit.shape[0]}, index has {self._dim}")
        return unit

    def add(self, scope_key: str, entry_id: str, vector: np.ndarray, expires_at: float) -> None:
        """Insert or replace ``entry_id`` (moving it if it was in another scope)."""
        unit = self._check(vector)
        previous = self._scope_of.get(entry_id)
        if previous is not None and previous != scope_key:
            self.remove(entry_id)
        matrix = self._scopes.get(scope_key)
        if matrix is None:
            matrix = self._scopes[scope_key] = _ScopeMatrix(unit.shape[0])
        matrix.add(entry_id, unit, expires_at)
        self._scope_of[entry_id] = scope_key
        if isinstance(matrix, _ScopeMatrix) and self._ann_min is not None and len(matrix) >= self._ann_min:
            self._scopes[scope_key] = _promote(matrix, self._ann_dtype)

    def holds(self, scope_key: str, entry_id: str, expires_at: float) -> bool:
        """Whether ``entry_id`` is in ``scope_key`` with this expiry time (so adding it again changes nothing)."""
        if self._scope_of.get(entry_id) != scope_key:
            return False
        return self._scopes[scope_key].expires_of(entry_id) == expires_at

    def reserve(self, scope_key: str, entry_id: str, vector: np.ndarray) -> None:
        """``entry_id`` (of scope ``scope_key``) will soon be added with ``vector``, just searched: an HNSW scope
        inserts its row now, while the search has left that part of the graph in the CPU's caches, and ``add``
        claims it (:meth:`cache.ann.AnnScope.reserve`). Exact matrices need no head start."""
        scope = self._scopes.get(scope_key)
        if isinstance(scope, AnnScope):
            scope.reserve(entry_id, self._check(vector))

    def remove(self, entry_id: str) -> bool:
        scope_key = self._scope_of.pop(entry_id, None)
        if scope_key is None:
            return False
        matrix = self._scopes[scope_key]
        matrix.remove(entry_id)
        if not len(matrix):
            del self._scopes[scope_key]
        return True

    def clear(self) -> None:
        self._scopes.clear()
        self._scope_of.clear()

    def purge_expired(self, scope_key: str, now: float) -> list[str]:
        """Drop the rows of ``scope_key`` whose expiry time has passed; returns their ids."""
        matrix = self._scopes.get(scope_key)
        if matrix is None:
            return []
        gone = matrix.expired(now)
        for entry_id in gone:
            self.remove(entry_id)
        return gone

    def search(self, scope_key: str, vector: np.ndarray, k: int, now: float) -> list[Match]:
        """The ``k`` most similar live rows of ``scope_key``, best first (cosine similarity)."""
        self.purge_expired(scope_key, now)
        matrix = self._scopes.get(scope_key)
        if matrix is None:
            return []
        query = self._check(vector)
        if isinstance(matrix, AnnScope):
            return [Match(entry_id, similarity) for entry_id, similarity in matrix.search(query, k)]
        return matrix.search(query, k)
