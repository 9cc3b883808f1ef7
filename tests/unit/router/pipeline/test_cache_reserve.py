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
from tests.unit.cache.test_two_stage import CountingEmbedder, CountingGate

MODEL = "fake-model"


def chat(text: str) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


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
    metrics = Metrics()
    metrics.in_progress = 1 + others_in_flight  # this request and the others
    ctx = Context(settings=load_settings(environ={}).deja, provider=FakeProvider([MODEL]), auth=None,  # type: ignore[arg-type]
                  limiter=None, metrics=metrics, cache=cache, embedder=None, usage=None,  # type: ignore[arg-type]
                  background=set())
    principal = Principal(key_id=None, tenant="t", name="test", is_master=True, allowed_models=(), limits=Limits())
    body = chat("How do I bake sourdough bread at home?")
    lookup = await cache_step.look_up(ctx, Call("req_1", "chat", principal, MODEL), body, CacheControls())
    assert lookup.label == "miss" and lookup.result is not None and lookup.result.stage == "gate"
    assert (len(graph._index), graph.reserved) == ((rows + 1, 1) if reserved_at_lookup else (rows, 0))
    cache_step.store(ctx, lookup, body, answer("bake it"))
    for task in list(ctx.background):
        await task
    assert (len(graph._index), graph.reserved, graph._dead) == (rows + 1, 0, 0)  # one insert either way
    again = await cache_step.look_up(ctx, Call("req_2", "chat", principal, MODEL), body, CacheControls())
    assert again.label == "exact"
