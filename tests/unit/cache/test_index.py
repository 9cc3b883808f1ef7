"""VectorIndex: per-scope cosine search over normalised rows."""

from __future__ import annotations

import numpy as np
import pytest

from cache.errors import CacheConfigError
from cache.index import VectorIndex, normalize


def unit(*values: float) -> np.ndarray:
    return normalize(np.array(values, dtype=np.float32))


def test_search_returns_best_first_within_scope_only() -> None:
    index = VectorIndex()
    index.add("s1", "a", unit(1, 0, 0), expires_at=100)
    index.add("s1", "b", unit(1, 1, 0), expires_at=100)
    index.add("s1", "c", unit(0, 0, 1), expires_at=100)
    index.add("s2", "d", unit(1, 0, 0), expires_at=100)
    found = index.search("s1", unit(1, 0.1, 0), k=2, now=0)
    assert [m.id for m in found] == ["a", "b"]
    assert found[0].similarity == pytest.approx(float(unit(1, 0.1, 0) @ unit(1, 0, 0)), abs=1e-6)
    assert index.search("s3", unit(1, 0, 0), k=5, now=0) == []
    assert len(index) == 4 and index.scope_count == 2


def test_inputs_are_normalised() -> None:
    index = VectorIndex()
    index.add("s", "a", np.array([3.0, 4.0]), expires_at=10)
    assert index.search("s", np.array([30.0, 40.0]), k=1, now=0)[0].similarity == pytest.approx(1.0)


def test_remove_swaps_rows_and_keeps_ids_right() -> None:
    index = VectorIndex()
    for i in range(40):  # forces growth beyond the initial 16 rows
        index.add("s", f"id{i}", unit(1, i, 0), expires_at=10)
    assert index.remove("id0") and not index.remove("id0")
    assert "id0" not in index and "id39" in index
    best = index.search("s", unit(1, 39, 0), k=1, now=0)[0]
    assert best.id == "id39" and best.similarity == pytest.approx(1.0)
    for i in range(1, 40):
        index.remove(f"id{i}")
    assert len(index) == 0 and index.scope_count == 0


def test_replace_and_move_between_scopes() -> None:
    index = VectorIndex()
    index.add("s1", "a", unit(1, 0), expires_at=10)
    index.add("s1", "a", unit(0, 1), expires_at=10)
    assert len(index) == 1
    assert index.search("s1", unit(0, 1), k=1, now=0)[0].similarity == pytest.approx(1.0)
    index.add("s2", "a", unit(0, 1), expires_at=10)
    assert index.search("s1", unit(0, 1), k=1, now=0) == []
    assert [m.id for m in index.search("s2", unit(0, 1), k=1, now=0)] == ["a"]


def test_expired_rows_are_dropped_on_search() -> None:
    index = VectorIndex()
    index.add("s", "old", unit(1, 0), expires_at=5)
    index.add("s", "new", unit(1, 0), expires_at=50)
    assert {m.id for m in index.search("s", unit(1, 0), k=5, now=1)} == {"old", "new"}
    assert [m.id for m in index.search("s", unit(1, 0), k=5, now=5)] == ["new"]
    assert "old" not in index


def test_dimension_mismatch_is_a_config_error() -> None:
    index = VectorIndex(dim=3)
    with pytest.raises(CacheConfigError):
        index.add("s", "a", unit(1, 0), expires_at=10)


def _rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_large_scope_moves_to_hnsw_and_still_finds_neighbours() -> None:
    rows = _rows(300)
    index = VectorIndex(ann_min_rows=64)
    for i, row in enumerate(rows):
        index.add("big", f"id{i}", row, expires_at=100)
    index.add("small", "lonely", rows[0], expires_at=100)
    assert type(index._scopes["big"]).__name__ == "AnnScope"
    assert type(index._scopes["small"]).__name__ == "_ScopeMatrix"
    found = 0
    for i in range(0, 300, 10):
        best = index.search("big", rows[i] + 0.01 * rows[(i + 1) % 300], k=3, now=0)
        assert len(best) == 3 and best[0].similarity >= best[1].similarity >= best[2].similarity
        found += best[0].id == f"id{i}"
    assert found >= 27  # approximate search: nearly always the true neighbour
    assert [m.id for m in index.search("small", rows[0], k=3, now=0)] == ["lonely"]


def test_hnsw_scope_remove_replace_move_and_expire() -> None:
    rows = _rows(100, seed=1)
    index = VectorIndex(ann_min_rows=16)
    for i, row in enumerate(rows):
        index.add("s", f"id{i}", row, expires_at=50 if i < 10 else 100)
    assert index.remove("id20") and not index.remove("id20")
    assert all(m.id != "id20" for m in index.search("s", rows[20], k=5, now=0))
    index.add("s", "id21", rows[22], expires_at=100)  # replaced: now sits where id22 is
    assert {m.id for m in index.search("s", rows[22], k=2, now=0)} == {"id21", "id22"}
    index.add("other", "id30", rows[30], expires_at=100)  # moved to another scope
    assert all(m.id != "id30" for m in index.search("s", rows[30], k=5, now=0))
    assert index.search("other", rows[30], k=1, now=0)[0].id == "id30"
    gone = index.purge_expired("s", now=60)
    assert sorted(gone) == sorted(f"id{i}" for i in range(10))
    assert all(m.id not in gone for m in index.search("s", rows[3], k=10, now=60))
    assert len(index) == 100 - 1 - 10


def test_hnsw_scope_keeps_working_under_churn() -> None:
    rows = _rows(400, seed=2)
    index = VectorIndex(ann_min_rows=32)
    for i in range(400):  # a window of 64 live rows slides over 400 ids
        index.add("s", f"id{i}", rows[i], expires_at=100)
        if i >= 64:
            index.remove(f"id{i - 64}")
    assert len(index) == 64
    assert index.search("s", rows[399], k=1, now=0)[0].id == "id399"
    assert index.search("s", rows[10], k=1, now=0)[0].id != "id10"


def test_hnsw_similarities_are_close_to_exact_in_f16() -> None:
    rows = _rows(200, dim=64, seed=3)
    index = VectorIndex(ann_min_rows=16, ann_dtype="f16")
    for i, row in enumerate(rows):
        index.add("s", f"id{i}", row, expires_at=100)
    query = normalize(rows[5] + 0.3 * rows[6])
    for match in index.search("s", query, k=5, now=0):
        exact = float(rows[int(match.id[2:])] @ query)
        assert match.similarity == pytest.approx(exact, abs=2e-3)


def test_hnsw_scope_under_eviction_churn_stays_bounded_and_never_serves_a_removed_row() -> None:
    # a full cache evicts one row per insert; usearch's own remove once froze the server here (soak at capacity)
    from cache.ann import AnnScope

    rng = np.random.default_rng(7)
    scope = AnnScope(32, "i8")
    live: list[str] = []
    for i in range(12_000):
        vector = rng.standard_normal(32).astype(np.float32)
        scope.add(f"e{i}", vector / np.linalg.norm(vector), 1e12)
        live.append(f"e{i}")
        if len(live) > 2_500:
            assert scope.remove(live.pop(0))
    assert len(scope) == 2_500
    assert len(scope._index) <= 2 * len(scope) + 257  # dead rows are rebuilt away: memory stays bounded
    alive = set(live)
    for _ in range(50):
        query = rng.standard_normal(32).astype(np.float32)
        found = scope.search(query / np.linalg.norm(query), 5)
        assert len(found) == 5 and {entry_id for entry_id, _ in found} <= alive


def test_pinning_blas_to_one_thread_drops_the_switch_per_search(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import cache.blas as blas

    if blas._BLAS is None:
        pytest.skip("threadpoolctl is not installed")
    before = [lib["num_threads"] for lib in blas._BLAS.info() if lib["user_api"] == "blas"]
    matrix = np.random.default_rng(3).standard_normal((4096, 64)).astype(np.float32)
    query = matrix[17] + 0.01
    expected = blas.nearest_rows(matrix, query, 5)[0].tolist()
    assert not isinstance(blas.blas_limit(matrix.size), contextlib.nullcontext)  # a switch per product
    monkeypatch.setattr(blas, "_pinned", False)
    try:
        blas.pin_single_thread()
        assert [lib["num_threads"] for lib in blas._BLAS.info() if lib["user_api"] == "blas"] == [1] * len(before)
        assert isinstance(blas.blas_limit(matrix.size), contextlib.nullcontext)
        assert blas.nearest_rows(matrix, query, 5)[0].tolist() == expected
    finally:
        for threads in set(before):
            blas._BLAS.limit(limits=threads, user_api="blas")
