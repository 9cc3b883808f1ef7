"""HNSW scopes never build a graph in one go: rows move a few per insert, and searches stay right meanwhile."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import ann
from cache.ann import MOVE_PER_ADD, AnnScope
from cache.index import VectorIndex

pytestmark = pytest.mark.skipif(not ann.ann_available(), reason="usearch is not installed")


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _brute_best(live: dict[str, np.ndarray], query: np.ndarray) -> tuple[str, float]:
    ids = list(live)
    sims = np.stack([live[i] for i in ids]) @ query
    return ids[int(np.argmax(sims))], float(np.max(sims))


def test_promotion_builds_nothing_at_once_and_moves_every_row() -> None:
    rng = np.random.default_rng(1)
    index = VectorIndex(ann_min_rows=200, ann_dtype="f16")
    live: dict[str, np.ndarray] = {}
    for i in range(200):
        live[f"id{i}"] = vector = _unit(rng, 24)
        index.add("s", f"id{i}", vector, expires_at=1e12)
    scope = index._scopes["s"]
    assert isinstance(scope, AnnScope) and scope.building
    assert len(scope._index) == 0  # the promoting insert built no graph: the rows wait in the old matrix
    for i in range(200, 300):
        before = len(scope._index)
        live[f"id{i}"] = vector = _unit(rng, 24)
        index.add("s", f"id{i}", vector, expires_at=1e12)
        assert len(scope._index) - before <= 1 + MOVE_PER_ADD
        query = _unit(rng, 24)
        best_id, best_sim = _brute_best(live, query)
        found = index.search("s", query, k=3, now=0)
        assert found[0].similarity == pytest.approx(best_sim, abs=2e-3), best_id
    assert not scope.building  # 100 inserts moved the 200 waiting rows
    assert len(scope._index) == 300


def test_rebuild_under_eviction_moves_rows_gradually_and_drops_the_old_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "MIN_DEAD_TO_REBUILD", 16)
    rng = np.random.default_rng(2)
    scope = AnnScope(16, "f16")
    live: dict[str, np.ndarray] = {}
    order: list[str] = []
    rebuilds = 0
    for i in range(1500):
        was_building = scope.building
        before = len(scope._index)
        live[f"e{i}"] = vector = _unit(rng, 16)
        scope.add(f"e{i}", vector, 1e12)
        order.append(f"e{i}")
        if not was_building:
            assert len(scope._index) == before + 1
        elif scope.building:
            assert len(scope._index) - before <= 1 + MOVE_PER_ADD
        if len(order) > 120:  # a full cache: each insert evicts the oldest row
            oldest = order.pop(0)
            del live[oldest]
            assert scope.remove(oldest)
            if scope.building and not was_building:
                rebuilds += 1
                assert len(scope._index) == 0  # a fresh graph, filled from here on
        query = _unit(rng, 16)
        found = scope.search(query, 4)
        assert {entry_id for entry_id, _ in found} <= set(live)
        assert found[0][1] == pytest.approx(_brute_best(live, query)[1], abs=2e-3)
        assert len(scope._index) <= 2 * len(scope) + 16 + 1 + 120 // MOVE_PER_ADD * (1 + MOVE_PER_ADD)
    assert rebuilds >= 3  # the churn went through several complete rebuilds


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "readd", "reserve", "claim"]), st.integers(0, 59)),
                min_size=1, max_size=300), st.integers(0, 2**32 - 1))
def test_any_sequence_of_inserts_and_removals_keeps_searches_exact(ops: list[tuple[str, int]], seed: int) -> None:
    """Small scopes (HNSW on a few dozen rows is exact), a rebuild after 4 dead rows, promotion at 8 rows, at most
    3 reservations waiting: whatever the sequence (reservations claimed or never, removals, replacements), a
    search returns only live ids, with their true cosine, the best first."""
    rng = np.random.default_rng(seed)
    original = ann.MIN_DEAD_TO_REBUILD, ann.MAX_RESERVED
    ann.MIN_DEAD_TO_REBUILD, ann.MAX_RESERVED = 4, 3
    try:
        index = VectorIndex(ann_min_rows=8, ann_dtype="f16")
        live: dict[str, np.ndarray] = {}
        reserved: dict[str, np.ndarray] = {}
        for op, n in ops:
            entry_id = f"id{n}"
            if op == "remove":
                assert index.remove(entry_id) == (live.pop(entry_id, None) is not None)
            elif op == "reserve":  # a miss's lookup: the answer may come (claim) or not
                vector = reserved.setdefault(entry_id, _unit(rng, 8))
                index.reserve("s", entry_id, vector)
            elif op == "claim":
                live[entry_id] = vector = reserved.pop(entry_id) if entry_id in reserved else _unit(rng, 8)
                index.add("s", entry_id, vector, expires_at=1e12)
            else:
                if op == "add" and entry_id in live:
                    continue
                live[entry_id] = vector = _unit(rng, 8)
                index.add("s", entry_id, vector, expires_at=1e12)
            if live:
                query = _unit(rng, 8)
                found = index.search("s", query, k=3, now=0)
                assert len(found) == min(3, len(live))
                assert len({m.id for m in found}) == len(found) and {m.id for m in found} <= set(live)
                for match in found:
                    assert match.similarity == pytest.approx(float(live[match.id] @ query), abs=2e-3)
                assert found[0].similarity == pytest.approx(_brute_best(live, query)[1], abs=2e-3)
    finally:
        ann.MIN_DEAD_TO_REBUILD, ann.MAX_RESERVED = original


def _scope_of_random_rows(rows: int, seed: int) -> tuple[np.random.Generator, AnnScope]:
    rng = np.random.default_rng(seed)
    scope = AnnScope(16, "f16")
    for i in range(rows):
        scope.add(f"e{i}", _unit(rng, 16), 1e12)
    return rng, scope


def test_a_reserved_row_is_searched_only_once_its_answer_claims_it_and_is_inserted_once() -> None:
    rng, scope = _scope_of_random_rows(50, seed=7)
    query = _unit(rng, 16)
    scope.reserve("new", query)
    scope.reserve("new", _unit(rng, 16))  # a second lookup of the same request while the first is in flight
    assert (len(scope._index), scope.reserved) == (51, 1)
    assert "new" not in {entry_id for entry_id, _ in scope.search(query, 5)}  # not an entry yet
    scope.add("new", query.copy(), 1e12)  # the answer, stored with the vector its lookup searched
    assert (len(scope._index), scope.reserved, scope._dead) == (51, 0, 0)  # claimed: no second insert
    assert scope.search(query, 1)[0][0] == "new"
    other, stored = _unit(rng, 16), _unit(rng, 16)
    scope.reserve("changed", other)
    scope.add("changed", stored, 1e12)  # another vector: the reserved row is dead, the new one inserted
    assert (len(scope._index), scope.reserved, scope._dead) == (53, 0, 1)
    assert scope.search(stored, 1)[0] == ("changed", pytest.approx(1.0, abs=2e-3))
    assert all(entry_id != "changed" or sim < 0.99 for entry_id, sim in scope.search(other, 5))


def test_reservations_never_claimed_become_dead_rows_and_are_rebuilt_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers that never come (upstream errors, uncacheable answers): past MAX_RESERVED the oldest count as dead,
    and enough dead rows start a rebuild, which leaves them behind."""
    monkeypatch.setattr(ann, "MAX_RESERVED", 4)
    monkeypatch.setattr(ann, "MIN_DEAD_TO_REBUILD", 16)
    rng = np.random.default_rng(8)
    scope = AnnScope(16, "f16")
    live: dict[str, np.ndarray] = {}
    for i in range(40):
        live[f"e{i}"] = vector = _unit(rng, 16)
        scope.add(f"e{i}", vector, 1e12)
    for i in range(44):
        scope.reserve(f"lost{i}", _unit(rng, 16))
        assert scope.reserved == min(i + 1, 4)
    assert not scope.building and scope._dead == 40
    scope.reserve("lost44", _unit(rng, 16))  # 41 dead rows, more than the 40 live: a new graph without them
    assert scope.building and scope.reserved == 0
    for i in range(40, 60):  # inserts move the live rows over
        live[f"e{i}"] = vector = _unit(rng, 16)
        scope.add(f"e{i}", vector, 1e12)
    assert not scope.building and len(scope._index) == 60
    query = _unit(rng, 16)
    assert scope.search(query, 1)[0][0] == _brute_best(live, query)[0]


def test_rows_removed_while_waiting_do_not_hide_the_next_nearest() -> None:
    """The k rows nearest a query are removed before they move: a search still finds the next nearest ones."""
    rng = np.random.default_rng(5)
    index = VectorIndex(ann_min_rows=400, ann_dtype="f16")
    query = _unit(rng, 16)
    live: dict[str, np.ndarray] = {}
    for i in range(400):
        raw = _unit(rng, 16) if i >= 10 else _unit(rng, 16) * 0.2 + query  # the first ten sit near the query
        live[f"id{i}"] = vector = raw / np.linalg.norm(raw)
        index.add("s", f"id{i}", vector, expires_at=1e12)
    scope = index._scopes["s"]
    assert isinstance(scope, AnnScope) and scope.building
    for i in range(10):  # the ten nearest, all still waiting in the old matrix
        assert index.remove(f"id{i}")
        del live[f"id{i}"]
    found = index.search("s", query, k=3, now=0)
    expected = sorted(live, key=lambda entry_id: -float(live[entry_id] @ query))[:3]
    assert [m.id for m in found] == expected


def test_a_graph_being_replaced_hands_its_last_waiting_rows_to_an_exact_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "MIN_DEAD_TO_REBUILD", 16)
    monkeypatch.setattr(ann, "MAX_OLD_NEIGHBOURS", 64)
    rng = np.random.default_rng(6)
    scope = AnnScope(16, "f16")
    live: dict[str, np.ndarray] = {}
    order: list[str] = []
    kinds: set[str] = set()
    for i in range(1200):
        live[f"e{i}"] = vector = _unit(rng, 16)
        scope.add(f"e{i}", vector, 1e12)
        order.append(f"e{i}")
        if len(order) > 200:
            oldest = order.pop(0)
            del live[oldest]
            scope.remove(oldest)
        query = _unit(rng, 16)
        found = scope.search(query, 5)
        kinds.add(type(scope._old).__name__)
        assert [entry_id for entry_id, _ in found][0] == max(live, key=lambda e: float(live[e] @ query))
    assert {"_OldGraph", "_OldRows"} <= kinds  # builds went through both ways of searching the waiting rows


def test_a_claimed_row_older_than_its_neighbours_moves_in_key_order_during_a_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reservation's key is older than the rows stored while its answer was on the way; when a rebuild moves
    rows, it must still know which rows wait (else a moved row is found in both graphs)."""
    monkeypatch.setattr(ann, "MIN_DEAD_TO_REBUILD", 2)
    rng, scope = _scope_of_random_rows(10, seed=9)
    mine = _unit(rng, 16)
    scope.reserve("mine", mine)
    for i in range(10, 16):
        scope.add(f"e{i}", _unit(rng, 16), 1e12)
    scope.add("mine", mine, 1e12)  # claimed: its key is older than e10..e15's
    for i in range(9):
        scope.remove(f"e{i}")
    assert scope.building
    scope.add("next", _unit(rng, 16), 1e12)  # moves the newest rows first
    found = [entry_id for entry_id, _ in scope.search(mine, 5)]
    assert found[0] == "mine" and len(set(found)) == len(found)
    assert scope._waiting_count == sum(1 for key in scope._to_move if key in scope._id_of)
