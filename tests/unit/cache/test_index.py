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
