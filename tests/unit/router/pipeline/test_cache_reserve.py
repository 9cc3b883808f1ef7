"""The cache step's choice of when a miss goes into the HNSW graph: right after its search while other requests are
in flight (the graph's memory is still cached, and CPU is short), after its answer when the request is alone (off
its latency). The real cache, store and graph; an in-process provider."""

from __future__ import annotations

import pytest

from cache import MemoryStore, SemanticCache, build_scope
from cache.ann import AnnScope
from router.auth.keys import Limits, Principal
from router.config import load_settings
from router.ops.metrics import Metrics
from router.pipeline import cache_step
from router.pipeline.cache_controls import CacheControls
from router.pipeline.context import Context
from router.pipeline.steps import Call
from tests.fakes import FakeProvider
from tests.unit.cache.test_semantic import StubVerifier, answer
from tests.unit.cache.test_two_stage import BeginningEmbedder, CountingEmbedder, CountingGate

MODEL = "fake-model"


PRINCIPAL = Principal(key_id=None, tenant="t", name="test", is_master=True, allowed_models=(), limits=Limits())


def chat(text: str) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def _context(cache: SemanticCache, in_progress: int) -> Context:
    metrics = Metrics()
    metrics.in_progress = in_progress
    return Context(settings=load_settings(environ={}).deja, provider=FakeProvider([MODEL]), auth=None,  # type: ignore[arg-type]
                   limiter=None, metrics=metrics, cache=cache, embedder=None, usage=None,  # type: ignore[arg-type]
                   background=set())


@pytest.mark.parametrize(("others_in_flight", "reserved_at_lookup"), [(0, False), (1, True), (31, True)])
async def test_a_gate_miss_reserves_its_graph_row_only_while_others_are_in_flight(
    others_in_flight: int, reserved_at_lookup: bool
) -> None:
    store = MemoryStore(ann_min_rows=8, ann_dtype="f16")
    cache = SemanticCache(store, CountingEmbedder(), StubVerifier(), gate=CountingGate(), gate_threshold=0.5)
    for i in range(20):
        scope, query = build_scope(chat(f"stored question {i} about subject{i}"), tenant="t", namespace="")
        await cache.store(scope, chat(f"stored question {i} about subject{i}"), query, answer(str(i)))
    (graph,) = store._index._scopes.values()
    assert isinstance(graph, AnnScope)
    rows = len(graph._index)
    ctx = _context(cache, in_progress=1 + others_in_flight)  # this request and the others
    body = chat("How do I bake sourdough bread at home?")
    lookup = await cache_step.look_up(ctx, Call("req_1", "chat", PRINCIPAL, MODEL), body, CacheControls())
    assert lookup.label == "miss" and lookup.result is not None and lookup.result.stage == "gate"
    assert (len(graph._index), graph.reserved) == ((rows + 1, 1) if reserved_at_lookup else (rows, 0))
    cache_step.store(ctx, lookup, body, answer("bake it"))
    for task in list(ctx.background):
        await task
    assert (len(graph._index), graph.reserved, graph._dead) == (rows + 1, 0, 0)  # one insert either way
    again = await cache_step.look_up(ctx, Call("req_2", "chat", PRINCIPAL, MODEL), body, CacheControls())
    assert again.label == "exact"


@pytest.mark.parametrize(("others_in_flight", "eager"), [(0, True), (1, False), (31, False)])
async def test_a_request_alone_starts_the_transformer_beside_the_verifiers_precheck(
    others_in_flight: int, eager: bool
) -> None:
    """Alone, latency counts: the question's transformer run starts before the precheck (wasted when the precheck
    refuses). Under load, CPU counts: it starts only once the precheck lets a candidate through."""
    log: list[tuple[str, str]] = []
    cache = SemanticCache(MemoryStore(), BeginningEmbedder(log), StubVerifier(), gate=CountingGate(),
                          gate_threshold=0.5)
    stored = chat("What is the capital of France?")
    scope, query = build_scope(stored, tenant="t", namespace="")
    await cache.store(scope, stored, query, answer("Paris"))
    ctx = _context(cache, in_progress=1 + others_in_flight)
    body = chat("what is the capital city of France")
    lookup = await cache_step.look_up(ctx, Call("req_1", "chat", PRINCIPAL, MODEL), body, CacheControls())
    assert lookup.label == "semantic"
    assert [kind for kind, _ in log] == (["begin", "embed"] if eager else ["embed"])
