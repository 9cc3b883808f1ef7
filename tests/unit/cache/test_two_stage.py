"""The semantic tier's two stages: a gate miss runs neither the transformer nor the verifier; candidates'
transformer vectors are computed once and kept; store() reuses the lookup's vectors; oversized queries skip
the tier; the verifier runs off the event loop (but its lexical half on short texts); the decision is explained
in the LookupResult."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache import LookupResult, MemoryStore, SemanticCache, StaticEmbedder, build_scope
from cache.errors import EmbeddingUnavailableError
from cache.gate import DEFAULT_GATE_THRESHOLD

from .test_semantic import StubVerifier, answer, body


def _bag(text: str, dim: int) -> np.ndarray:
    out = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        out[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return out / max(float(np.linalg.norm(out)), 1e-9)


class CountingEmbedder:
    """The 'transformer': a hashed bag of words (dim 96); records every text it embeds."""

    dim = 96

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return np.stack([_bag(t, self.dim) for t in texts])

    async def close(self) -> None:
        return None


class CountingGate:
    """The 'gate': another hashed bag of words (dim 64), synchronous; records every text."""

    dim = 64

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, text: str) -> np.ndarray:
        self.texts.append(text)
        return _bag(text, self.dim)


class ThreadRecordingVerifier(StubVerifier):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def check(self, query: str, candidate: str, similarity: float, *, min_similarity: float | None = None) -> Any:
        self.threads.append(threading.get_ident())
        return super().check(query, candidate, similarity, min_similarity=min_similarity)


def make(verifier: Any = None, **kw: Any) -> tuple[SemanticCache, CountingEmbedder, CountingGate]:
    embedder, gate = CountingEmbedder(), CountingGate()
    cache = SemanticCache(MemoryStore(), embedder, verifier or StubVerifier(), gate=gate,
                          gate_threshold=kw.pop("gate_threshold", 0.5), **kw)
    return cache, embedder, gate


async def store(cache: SemanticCache, text: str, lookup: LookupResult | None = None) -> None:
    b = body(text)
    scope, query = build_scope(b, tenant="t", namespace="n")
    await cache.store(scope, b, query, answer(text.upper()), lookup=lookup)


async def lookup(cache: SemanticCache, text: str, **kw: Any) -> LookupResult:
    b = body(text, **kw)
    scope, query = build_scope(b, tenant="t", namespace="n")
    return await cache.lookup(scope, b, query)


async def test_gate_miss_runs_neither_transformer_nor_verifier() -> None:
    verifier = StubVerifier()
    cache, embedder, _ = make(verifier)
    await store(cache, "What is the capital of France?")
    assert embedder.texts == []  # storing without a lookup costs the gate only
    result = await lookup(cache, "How do I bake sourdough bread at home?")
    assert result.kind == "miss" and result.stage == "gate"
    assert result.gate_similarity is not None and result.gate_similarity < 0.5
    assert result.gate_threshold == 0.5 and result.best_similarity is None
    assert result.rejected_reason == "below-gate"
    assert embedder.texts == [] and verifier.checked == []


async def test_candidate_vectors_are_computed_once_and_kept() -> None:
    cache, embedder, _ = make()
    await store(cache, "What is the capital of France?")
    first = await lookup(cache, "what is the capital city of France")
    assert first.kind == "semantic" and first.stage == "transformer"
    assert embedder.texts == ["what is the capital city of France", "What is the capital of France?"]
    second = await lookup(cache, "capital of France, what is it")
    assert second.kind == "semantic"
    assert embedder.texts[2:] == ["capital of France, what is it"]  # the candidate's vector was kept
    assert first.entry is not None and first.entry.id == second.entry.id  # type: ignore[union-attr]


async def test_store_reuses_the_lookups_vectors() -> None:
    cache, embedder, gate = make()
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "what is the capital city of France")
    texts_before, gates_before = len(embedder.texts), len(gate.texts)
    await store(cache, "what is the capital city of France", lookup=result)
    assert len(embedder.texts) == texts_before and len(gate.texts) == gates_before
    again = await lookup(cache, "the capital city of France, what is it")
    assert again.kind == "semantic"
    # Both stored entries were candidates; neither needed the transformer again.
    assert embedder.texts[texts_before:] == ["the capital city of France, what is it"]


async def test_store_ignores_a_lookup_for_another_query() -> None:
    cache, _, gate = make()
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "what is the capital city of France")
    await store(cache, "How tall is Mount Everest?", lookup=result)
    assert gate.texts[-1] == "How tall is Mount Everest?"
    hit = await lookup(cache, "how tall is mount everest exactly")
    assert hit.kind == "semantic" and hit.entry is not None
    assert hit.entry.query == "How tall is Mount Everest?"


async def test_gate_miss_result_feeds_the_store() -> None:
    cache, embedder, gate = make()
    result = await lookup(cache, "What is the capital of France?")
    assert result.stage == "gate" and result.vectors is not None and result.vectors.dense is None
    gates = len(gate.texts)
    await store(cache, "What is the capital of France?", lookup=result)
    assert len(gate.texts) == gates and embedder.texts == []


async def test_oversized_query_skips_the_semantic_tier() -> None:
    cache, embedder, gate = make(max_query_chars=50)
    await store(cache, "What is the capital of France?")
    huge = "What is the capital of France? " * 10
    result = await lookup(cache, huge)
    assert result.kind == "miss" and result.skipped == "too_large" and result.stage is None
    assert embedder.texts == [] and huge not in gate.texts
    await store(cache, huge)  # cached for exact replays only
    assert huge not in gate.texts and embedder.texts == []
    assert (await lookup(cache, huge)).kind == "exact"


async def test_skipped_reasons() -> None:
    cache, _, _ = make(max_semantic_temperature=0.5)
    assert (await lookup(cache, "hello there", temperature=0.9)).skipped == "temperature"
    assert (await lookup(cache, "hello there", temperature=0.1)).skipped is None
    no_embedder = SemanticCache(MemoryStore(), None, None)
    b = body("hello there")
    scope, query = build_scope(b, tenant="t", namespace="n")
    assert (await no_embedder.lookup(scope, b, query)).skipped == "disabled"


async def test_verifier_runs_off_the_event_loop_and_its_verdict_is_reported() -> None:
    verifier = ThreadRecordingVerifier()
    cache, _, _ = make(verifier)
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "what is the capital city of France")
    assert result.kind == "semantic"
    assert verifier.threads and all(t != threading.get_ident() for t in verifier.threads)
    assert result.verifier_reason == "ok" and result.verifier_score == result.similarity
    assert result.floor == verifier.default_min_similarity


async def test_refusal_is_reported_on_the_miss() -> None:
    verifier = StubVerifier(refuse=["What is the capital of France?"])
    cache, _, _ = make(verifier)
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "what is the capital city of France")
    assert result.kind == "miss" and result.stage == "transformer"
    assert result.verifier_reason == result.rejected_reason == "refused 'What is the capital of France?'"
    assert result.best_similarity is not None and result.candidates == 1


async def test_exact_hit_says_so() -> None:
    cache, embedder, _ = make()
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "What is the capital of France?")
    assert result.kind == "exact" and result.stage == "exact" and embedder.texts == []


def test_real_gate_separates_paraphrase_from_unrelated_question() -> None:
    gate = StaticEmbedder.load()
    stored = gate.embed("What is the capital of France?")
    assert float(gate.embed("what is the capital city of France") @ stored) >= DEFAULT_GATE_THRESHOLD
    assert float(gate.embed("How do I bake sourdough bread at home?") @ stored) < DEFAULT_GATE_THRESHOLD
    assert stored.shape == (gate.dim,) and float(np.linalg.norm(stored)) == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_real_gate_takes_any_text(text: str) -> None:
    vector = _GATE.embed(text)
    assert vector.shape == (_GATE.dim,) and vector.dtype == np.float32
    norm = float(np.linalg.norm(vector))
    assert norm == 0.0 or norm == pytest.approx(1.0, abs=1e-4)


_GATE = StaticEmbedder.load()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120), st.text(max_size=120))
async def test_any_query_is_a_clean_lookup(stored: str, asked: str) -> None:
    cache = SemanticCache(MemoryStore(), CountingEmbedder(), StubVerifier(), gate=_GATE, max_query_chars=100)
    await store(cache, stored)
    result = await lookup(cache, asked)
    assert result.kind in ("exact", "semantic", "miss")
    if len(asked) > 100:
        assert result.skipped == "too_large"


async def test_only_the_gates_best_candidates_reach_the_transformer() -> None:
    cache, embedder, _ = make(transformer_candidates=1)
    for text in ("What is the capital of France?", "What is the capital of France now?",
                 "What is the capital of France today?"):
        await store(cache, text)
    result = await lookup(cache, "what is the capital of France")
    assert result.kind == "semantic" and result.candidates == 1
    assert len(embedder.texts) == 2  # the query and the gate's best candidate, nothing more


async def test_candidate_the_verifier_refuses_at_any_cosine_never_reaches_the_transformer() -> None:
    verifier = StubVerifier(refuse_always=["What is the capital of France?"])
    cache, embedder, _ = make(verifier)
    await store(cache, "What is the capital of France?")
    result = await lookup(cache, "what is the capital city of France")
    assert result.kind == "miss" and result.stage == "verifier" and embedder.texts == []
    assert result.rejected_reason == result.verifier_reason == "refused whatever the cosine"
    assert verifier.prechecked == [("what is the capital city of France", "What is the capital of France?")]
    assert verifier.checked == []  # nothing left for the transformer stage to check
    assert result.vectors is not None and result.vectors.gate is not None and result.vectors.dense is None


async def test_precheck_drops_only_the_refused_candidates() -> None:
    verifier = StubVerifier(refuse_always=["What is the capital of France?"])
    cache, embedder, _ = make(verifier, transformer_candidates=2)
    await store(cache, "What is the capital of France?")
    await store(cache, "What is the capital city of France?")
    result = await lookup(cache, "what is the capital city of France")
    assert result.kind == "semantic" and result.stage == "transformer"
    assert result.entry is not None and result.entry.query == "What is the capital city of France?"
    assert "What is the capital of France?" not in embedder.texts  # its vector was never needed


async def test_real_verifier_skips_the_transformer_for_a_swapped_number() -> None:
    from cache.verify import Verifier

    cache, embedder, _ = make(Verifier.load_default())
    await store(cache, "What was the GATE 2017 cut-off for mechanical engineering?")
    swapped = await lookup(cache, "What was the GATE 2018 cut-off for mechanical engineering?")
    assert swapped.kind == "miss" and swapped.stage == "verifier" and swapped.rejected_reason == "number-mismatch"
    assert embedder.texts == []
    retyped = await lookup(cache, "what was the GATE 2017 cut-off for mechanical engineering")
    assert retyped.kind == "semantic" and retyped.verifier_reason == "identical" and embedder.texts


class ViewThreadVerifier(StubVerifier):
    """Records the thread each pair's lexical half (``view``) runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.view_threads: list[int] = []

    def view(self, query: str, candidate: str) -> tuple[str, str]:
        self.view_threads.append(threading.get_ident())
        return super().view(query, candidate)


async def test_precheck_of_short_texts_runs_on_the_loop_and_of_long_ones_in_a_thread() -> None:
    from cache.semantic import INLINE_PRECHECK_CHARS

    verifier = ViewThreadVerifier()
    cache, _, _ = make(verifier)
    await store(cache, "What is the capital of France?")
    assert (await lookup(cache, "what is the capital city of France")).kind == "semantic"
    assert verifier.view_threads == [threading.get_ident()]

    padding = " and also tell me about it" * (INLINE_PRECHECK_CHARS // 20)
    long_stored = "What is the capital of Spain?" + padding
    await store(cache, long_stored)
    verifier.view_threads.clear()
    result = await lookup(cache, "what is the capital city of Spain?" + padding)
    assert result.kind == "semantic" and result.entry is not None and result.entry.query == long_stored
    assert len(verifier.view_threads) == 1 and verifier.view_threads[0] != threading.get_ident()


@pytest.mark.parametrize("reserve", [True, False])
async def test_a_gate_miss_asked_to_reserve_inserts_its_graph_row_at_once(reserve: bool) -> None:
    """With an HNSW scope, a gate miss asked to reserve inserts its row right after the search, and the store
    claims it: one graph insert per miss either way, none of them wasted."""
    store_ = MemoryStore(ann_min_rows=8, ann_dtype="f16")
    cache = SemanticCache(store_, CountingEmbedder(), StubVerifier(), gate=CountingGate(), gate_threshold=0.5)
    for i in range(20):
        await store(cache, f"stored question {i} about subject{i} and thing{i}")
    (scope,) = store_._index._scopes.values()
    before = len(scope._index)
    text = "How do I bake sourdough bread at home?"
    b = body(text)
    s, query = build_scope(b, tenant="t", namespace="n")
    result = await cache.lookup(s, b, query, reserve=reserve)
    assert result.kind == "miss" and result.stage == "gate"
    assert (len(scope._index), scope.reserved) == ((before + 1, 1) if reserve else (before, 0))
    await cache.store(s, b, query, answer(text.upper()), lookup=result)
    assert (len(scope._index), scope.reserved, scope._dead) == (before + 1, 0, 0)
    assert (await lookup(cache, text)).kind == "exact"
    assert (await lookup(cache, "how do i bake sourdough bread at home")).kind == "semantic"


class BeginningEmbedder(CountingEmbedder):
    """A 'transformer' with ``begin``, which starts a run before it returns (as the ONNX embedder's does);
    logs what it is asked for, in order with the verifier's precheck."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.log = log

    def begin(self, texts: Sequence[str]) -> asyncio.Future[np.ndarray]:
        self.log.append(("begin", " | ".join(texts)))
        return asyncio.ensure_future(self.run(texts))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.log.append(("embed", " | ".join(texts)))
        return await self.run(texts)

    async def run(self, texts: Sequence[str]) -> np.ndarray:
        return await super().embed(texts)


class PrecheckLoggingVerifier(StubVerifier):
    def __init__(self, log: list[tuple[str, str]], **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log

    def best_case(self, view: tuple[str, str], *, min_similarity: float | None = None) -> Any:
        self.log.append(("precheck", view[0]))
        return super().best_case(view, min_similarity=min_similarity)


STORED = "What is the capital of France?"
ASKED = "what is the capital city of France"


async def _eager_lookup(
    eager: bool, eager_gate_similarity: float = 0.5, **verifier: Any
) -> tuple[LookupResult, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []
    cache = SemanticCache(MemoryStore(), BeginningEmbedder(log), PrecheckLoggingVerifier(log, **verifier),
                          gate=CountingGate(), gate_threshold=0.5, eager_gate_similarity=eager_gate_similarity)
    await store(cache, STORED)
    b = body(ASKED)
    scope, query = build_scope(b, tenant="t", namespace="n")
    return await cache.lookup(scope, b, query, eager=eager), log


@pytest.mark.parametrize("eager", [True, False])
async def test_an_eager_lookup_starts_the_transformer_before_the_precheck(eager: bool) -> None:
    result, log = await _eager_lookup(eager)
    assert result.kind == "semantic" and result.entry is not None and result.entry.query == STORED
    assert result.best_similarity == pytest.approx(float(_bag(ASKED, 96) @ _bag(STORED, 96)))
    if eager:  # the query's run first; the candidate's own vector is computed after the precheck, beside it
        assert log == [("begin", ASKED), ("precheck", ASKED), ("embed", STORED)]
    else:
        assert log == [("precheck", ASKED), ("embed", f"{ASKED} | {STORED}")]


async def test_an_eager_lookup_waits_for_the_precheck_when_the_gate_candidate_is_not_close_enough() -> None:
    gate_similarity = float(_bag(ASKED, 64) @ _bag(STORED, 64))
    result, log = await _eager_lookup(True, eager_gate_similarity=gate_similarity + 0.01)
    assert result.kind == "semantic" and result.gate_similarity == pytest.approx(gate_similarity)
    assert log == [("precheck", ASKED), ("embed", f"{ASKED} | {STORED}")]  # as without eager
    result, log = await _eager_lookup(True, eager_gate_similarity=gate_similarity - 0.01)
    assert log[0] == ("begin", ASKED)


async def test_an_eager_lookup_that_the_precheck_refuses_is_still_a_verifier_miss() -> None:
    result, log = await _eager_lookup(True, refuse_always=[STORED])
    assert result.kind == "miss" and result.stage == "verifier"
    assert log == [("begin", ASKED), ("precheck", ASKED)]  # the run was started for nothing, and nothing else


async def test_an_eager_lookup_whose_embedder_fails_says_so_as_a_plain_lookup_does() -> None:
    class Failing(BeginningEmbedder):
        async def run(self, texts: Sequence[str]) -> np.ndarray:
            raise RuntimeError("model gone")

    for eager in (True, False):
        cache = SemanticCache(MemoryStore(), Failing([]), StubVerifier(), gate=CountingGate(), gate_threshold=0.5)
        await store(cache, STORED)
        b = body(ASKED)
        scope, query = build_scope(b, tenant="t", namespace="n")
        with pytest.raises(EmbeddingUnavailableError, match="model gone"):
            await cache.lookup(scope, b, query, eager=eager)
