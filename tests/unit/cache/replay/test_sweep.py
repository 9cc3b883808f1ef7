"""The replay's decisions, against hand-made vectors and against the live SemanticCache itself."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cache.replay.engine import Verdicts, neighbours, prepare
from cache.replay.pricing import price
from cache.replay.records import ReplayRequest
from cache.replay.sweep import BELOW_FLOOR, EXACT, EXACT_ONLY, MISS, NO_CANDIDATE, SEMANTIC, Setting, simulate
from cache.scope import build_scope
from cache.semantic import SemanticCache
from cache.store import MemoryStore
from cache.verify import Verifier
from tests.unit.cache.replay.helpers import TableEmbedder, ask, at_cosine

DAY = 86_400.0


def test_neighbours_merge_the_best_earlier_and_the_best_later_rows() -> None:
    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = [0.6, 0.8, 0, 0]
    near = neighbours(vectors, depth=1)
    assert near[0] == [(3, pytest.approx(0.6))]  # nothing earlier: the best later row only
    assert near[1] == [(3, pytest.approx(0.8)), (0, 0.0)]  # best later (3) and best earlier (0), best first
    assert [j for j, _ in near[3]] == [1]


async def _prepare(requests: list[ReplayRequest], table: dict[str, list[float]], depth: int = 10):
    return await prepare(requests, TableEmbedder(table), depth=depth)


async def test_exact_semantic_and_miss_decisions_follow_the_floor() -> None:
    table = {"a": at_cosine(1.0), "b": at_cosine(0.95), "c": [0.0, 0.0, 1.0]}
    requests = [ask("a", 0), ask("a", 1), ask("b", 2), ask("c", 3), ask("b", 4)]
    prep = await _prepare(requests, table)
    assert prep.embedded == 3 and prep.n_items == 3  # "a" twice is one item, embedded once
    low = simulate(prep, Setting(0.90, verifier=False), None, ttl=DAY, top_k=5)
    assert low.kind.tolist() == [MISS, EXACT, SEMANTIC, MISS, SEMANTIC]
    assert low.served[2] == prep.item_of[0] and low.similarity[2] == pytest.approx(0.95, abs=1e-6)
    high = simulate(prep, Setting(0.97, verifier=False), None, ttl=DAY, top_k=5)
    assert high.kind.tolist() == [MISS, EXACT, MISS, MISS, EXACT]  # b missed, was stored, then repeats exactly
    assert high.reason[2] == BELOW_FLOOR and high.reason[0] == NO_CANDIDATE


async def test_ttl_expires_entries_and_hot_requests_are_exact_only() -> None:
    table = {"a": at_cosine(1.0), "b": at_cosine(0.99)}
    requests = [ask("a", 0), ask("a", DAY + 1), ask("b", DAY + 2, body={"temperature": 1.5})]
    prep = await _prepare(requests, table)
    run = simulate(prep, Setting(0.9, verifier=False), None, ttl=DAY, top_k=5)
    assert run.kind.tolist() == [MISS, MISS, MISS]
    assert run.reason[2] == EXACT_ONLY and prep.embedded == 1


async def test_scopes_never_share_entries() -> None:
    table = {"a": at_cosine(1.0)}
    requests = [ask("a", 0, tenant="t1"), ask("a", 1, tenant="t2"), ask("a", 2, body={"max_tokens": 5})]
    prep = await _prepare(requests, table)
    run = simulate(prep, Setting(0.5, verifier=False), None, ttl=DAY, top_k=5)
    assert run.kind.tolist() == [MISS, MISS, MISS]


async def test_the_verifier_refuses_with_its_reason_and_the_next_candidate_is_tried() -> None:
    a, b, q = "What is the GATE 2017 cutoff for ECE?", "What was the cutoff for ECE in GATE 2018?", \
        "What is the GATE 2018 cutoff for ECE?"
    table = {a: at_cosine(0.99), b: at_cosine(0.97), q: at_cosine(1.0)}
    prep = await _prepare([ask(a, 0), ask(b, 1), ask(q, 2)], table)
    verdicts = Verdicts(prep, Verifier.load_default())
    run = simulate(prep, Setting(0.9, verifier=True), verdicts, ttl=DAY, top_k=5)
    first = verdicts(prep.item_of[2], prep.item_of[0], 0.99)
    assert (first.accept, first.reason) == (False, "number-mismatch")
    assert run.kind[2] == SEMANTIC and run.served[2] == prep.item_of[1]
    cosine = simulate(prep, Setting(0.9, verifier=False), None, ttl=DAY, top_k=5)
    assert cosine.served[2] == prep.item_of[0]


async def test_replay_decides_as_the_live_semantic_cache() -> None:
    """The same stream through SemanticCache (lookup, then store on a miss) and through the replay."""
    rng = np.random.default_rng(3)
    topics = rng.normal(size=(6, 16))
    words = "cache water boil point python learn capital france price cost".split()
    table: dict[str, list[float]] = {}
    for n in range(30):
        text = " ".join(random.Random(n).sample(words, 4)) + f" {n % 7}?"
        table[text] = (topics[n % 6] + rng.normal(scale=0.12 * (n % 4), size=16)).tolist()
    texts = list(table)
    order = random.Random(5)
    requests = [ask(order.choice(texts), float(t * 600)) for t in range(120)]
    embedder = TableEmbedder(table)
    prep = await prepare(requests, embedder, depth=len(texts))
    verifier = Verifier.load_default()
    verdicts = Verdicts(prep, verifier)
    seen: set[str] = set()
    clock = [0.0]
    for setting in (Setting(0.95, True), Setting(0.8, True), Setting(0.9, False)):
        run = simulate(prep, setting, verdicts if setting.verifier else None, ttl=7200, top_k=5)
        live = SemanticCache(MemoryStore(), embedder, verifier if setting.verifier else None, ttl_seconds=7200,
                             clock=lambda: clock[0])
        for i, request in enumerate(requests):
            clock[0] = request.ts
            scope, query = build_scope(request.body, tenant="default", namespace="")
            result = await live.lookup(scope, request.body, query, threshold=setting.threshold)
            seen.add(result.kind if result.entry is not None else f"miss:{result.rejected_reason}")
            assert ["miss", "exact", "semantic"][run.kind[i]] == result.kind, (setting, i)
            if result.entry is not None:
                assert result.entry.query == prep.items.query[run.served[i]]
            else:
                assert run.reason[i] == (result.rejected_reason or (NO_CANDIDATE if result.best_similarity is None
                                                                     else BELOW_FLOOR))
                await live.store(scope, request.body, query, {"i": i})
    assert {"exact", "semantic", "miss:number-mismatch", "miss:below-floor"} <= seen  # every path was taken


async def test_costs_use_usage_when_present_else_count_and_price_map() -> None:
    requests = [ask("What is deja?", 0, prompt_tokens=100, completion_tokens=50),
                ask("What is deja?", 1, cost_usd=0.5, latency_ms=700.0),
                ask("hi", 2, body={"model": "no-such-model-xyz"})]
    costs = price(requests)
    assert costs.prompt_tokens[0] == 100 and costs.completion_tokens[0] == 50
    assert costs.usd[0] == pytest.approx(100 * 0.15e-6 + 50 * 0.6e-6)  # gpt-4o-mini in LiteLLM's bundled map
    assert costs.usd[1] == 0.5 and costs.latency_ms[1] == 700.0 and np.isnan(costs.latency_ms[0])
    assert costs.counted == 2 and costs.prompt_tokens[1] > 3
    assert costs.unpriced == {"no-such-model-xyz"} and costs.usd[2] == 0.0


async def test_lossless_pass_makes_spacing_variants_exact_as_live() -> None:
    table = {"How do I boil an egg?": at_cosine(1.0), "How  do I boil an egg?  ": at_cosine(1.0)}
    requests = [ask("How do I boil an egg?", 0), ask("How  do I boil an egg?  ", 1)]
    normalized = await prepare(requests, TableEmbedder(table))
    raw = await prepare(requests, TableEmbedder(table), normalize=False)
    assert simulate(normalized, Setting(0.9, False), None, ttl=DAY, top_k=5).kind.tolist() == [MISS, EXACT]
    assert simulate(raw, Setting(0.9, False), None, ttl=DAY, top_k=5).kind.tolist() == [MISS, SEMANTIC]


async def test_other_classifier_cutoffs_move_only_classifier_decisions() -> None:
    stored, retyped = "What is the boiling point of water?", "what's the boiling point of water"
    gate_a, gate_b = "What is the GATE 2017 cutoff?", "What is the GATE 2018 cutoff?"
    table = {stored: at_cosine(1.0), retyped: at_cosine(0.9492), gate_a: [0.0, 0.0, 1.0], gate_b: [0.0, 0.1, 0.99]}
    prep = await _prepare([ask(stored, 0), ask(retyped, 1), ask(gate_a, 2), ask(gate_b, 3)], table)
    verifier = Verifier.load_default()
    verdicts = Verdicts(prep, verifier)
    shipped = simulate(prep, Setting(0.8, True), verdicts, ttl=DAY, top_k=5)
    same = simulate(prep, Setting(0.8, True, cutoff=verifier.params.cutoff), verdicts, ttl=DAY, top_k=5)
    assert same.kind.tolist() == shipped.kind.tolist() and same.reason == shipped.reason
    judgement = verdicts(prep.item_of[1], prep.item_of[0], 0.9492)
    assert judgement.reason in ("ok", "classifier")  # no hard rule for a retyped question
    lenient = simulate(prep, Setting(0.8, True, cutoff=judgement.score - 0.01), verdicts, ttl=DAY, top_k=5)
    strict = simulate(prep, Setting(0.8, True, cutoff=min(1.0, judgement.score + 0.01)), verdicts, ttl=DAY,
                      top_k=5)
    assert lenient.kind.tolist() == [MISS, SEMANTIC, MISS, MISS]
    assert strict.kind.tolist() == [MISS, MISS, MISS, MISS] and strict.reason[1] == "classifier"
    assert lenient.reason[3] == strict.reason[3] == "number-mismatch"  # a hard rule holds at any cutoff
    assert Setting(0.8, True, cutoff=0.6).name == "verifier c=0.60@0.800"
