"""Spend attribution, tracing and cost headers through the real app, a real fake upstream and real SQLite or
PostgreSQL: tags and metadata on the usage row and in /admin/usage, the trace context and request id at the
upstream (direct path and LiteLLM's), the answer's cost and the key's spend in its headers, Prometheus labels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import STORAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, drop_storage, make_settings, start_deja, storage_section
from tests.integration.router.ops.helpers import scrape
from tests.integration.router.storage.helpers import wait_for

MASTER = "sk-master-test"
USAGE = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Behaviour(usage=USAGE)) as up:
        yield up


@pytest.fixture(params=["sqlite", "postgresql"])
async def deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    extra = storage_section(request, request.param)
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER, cache={"semantic": False},
                                            metrics={"tag_labels": ["prod"], "max_tenants": 2}, **extra))
    yield server
    await server.close()
    await drop_storage(extra)


async def call(server: Deja, method: str, path: str, body: Any = None, key: str = MASTER,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}", **(headers or {})}) as s, \
            s.request(method, server.url + path, json=body) as r:
        raw = await r.read()
        return r.status, r.headers.copy(), json.loads(raw) if r.content_type == "application/json" else raw


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def rows(server: Deja, expected: int) -> dict[str, dict[str, Any]]:
    storage = server.app[STORAGE]

    async def enough() -> bool:
        return len((await storage.list_requests(UsageFilter(), limit=500))[0]) >= expected

    await wait_for(enough, timeout=20)
    return {r["request_id"]: r for r in (await storage.list_requests(UsageFilter(), limit=500))[0]}


async def new_key(server: Deja, tenant: str) -> dict[str, Any]:
    status, _, body = await call(server, "POST", "/admin/keys", {"name": "t", "tenant": tenant})
    assert status == 201
    return body


async def test_tags_and_metadata_attribute_spend(deja: Deja, upstream: FakeOpenAI) -> None:
    key = await new_key(deja, "acme")
    sent = [
        (chat_body("one", metadata={"tags": ["prod", "app:web"], "run": "7"}), {"x-litellm-tags": "team:search"}),
        (chat_body("two", user="u-1"), {"x-deja-tags": "prod, batch"}),
        (chat_body("three"), {}),
    ]
    ids = []
    for body, headers in sent:
        status, answer_headers, _ = await call(deja, "POST", "/v1/chat/completions", body, key=key["key"],
                                               headers={"Cache-Control": "no-store", **headers})
        assert status == 200
        ids.append(answer_headers["X-Deja-Request-Id"])
    found = await rows(deja, 3)
    assert json.loads(found[ids[0]]["tags"]) == ["prod", "app:web", "team:search"]
    assert json.loads(found[ids[0]]["metadata"]) == {"tags": ["prod", "app:web"], "run": "7"}
    assert json.loads(found[ids[1]]["tags"]) == ["prod", "batch"] and found[ids[2]]["tags"] is None
    assert upstream.received[0].body["metadata"] == {"run": "7"}  # the tags stay with deja
    assert "metadata" not in upstream.received[1].body
    status, _, usage = await call(deja, "GET", "/admin/usage?group_by=tag")
    by_tag = {r["group"]: r for r in usage["data"]}
    assert {t: r["requests"] for t, r in by_tag.items()} == {"prod": 2, "app:web": 1, "team:search": 1, "batch": 1}
    assert by_tag["prod"]["cost_usd"] == pytest.approx(found[ids[0]]["cost_usd"] + found[ids[1]]["cost_usd"])
    _, _, usage = await call(deja, "GET", "/admin/usage?tag=batch&group_by=user")
    assert [(r["group"], r["requests"]) for r in usage["data"]] == [("u-1", 1)]
    _, _, own = await call(deja, "GET", "/admin/usage?group_by=tag", key=key["key"])  # a key reads its own
    assert {r["group"] for r in own["data"]} == set(by_tag)
    _, _, page = await call(deja, "GET", "/admin/requests?tag=prod")
    assert sorted(r["request_id"] for r in page["data"]) == sorted(ids[:2])
    assert {tuple(r["tags"]) for r in page["data"]} == {("prod", "app:web", "team:search"), ("prod", "batch")}
    _, _, stored = await call(deja, "GET", f"/admin/requests/{ids[0]}")
    assert stored["tags"] == ["prod", "app:web", "team:search"] and stored["metadata"]["run"] == "7"


async def test_bad_tags_are_a_400_and_leave_no_row(deja: Deja, upstream: FakeOpenAI) -> None:
    for body, headers, param in ((chat_body("x", metadata={"tags": "prod"}), {}, "metadata.tags"),
                                 (chat_body("x", metadata=["a"]), {}, "metadata"),
                                 (chat_body("x"), {"x-deja-tags": ",".join(f"t{i}" for i in range(30))}, "tags")):
        status, _, answer = await call(deja, "POST", "/v1/chat/completions", body, headers=headers)
        assert status == 400 and answer["error"]["param"] == param, answer
    assert upstream.received == []


@pytest.mark.parametrize("direct", [True, False])
async def test_trace_context_and_request_id_reach_the_upstream(tmp_path: Path, upstream: FakeOpenAI,
                                                               direct: bool) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, cache={"enabled": False}, direct_openai=direct))
    try:
        status, headers, _ = await call(server, "POST", "/v1/chat/completions", chat_body("traced", stream=True),
                                        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
        assert status == 200
        status, untraced, _ = await call(server, "POST", "/v1/chat/completions", chat_body("untraced"),
                                         headers={"traceparent": "nonsense"})
        assert status == 200
        found = await rows(server, 2)
    finally:
        await server.close()
    first, second = ({k.lower(): v for k, v in r.headers.items()} for r in upstream.received)
    assert (first["traceparent"], first["tracestate"]) == (TRACEPARENT, "vendor=1")
    assert first["x-request-id"] == headers["X-Deja-Request-Id"] == headers["X-Request-Id"]
    assert found[headers["X-Deja-Request-Id"]]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    started = second["traceparent"].split("-")  # deja started a trace: the row keeps its id
    assert started[0] == "00" and len(started[1]) == 32 and "tracestate" not in second
    assert found[untraced["X-Deja-Request-Id"]]["trace_id"] == started[1]
    assert second["x-request-id"] == untraced["X-Deja-Request-Id"]


async def test_cost_and_key_spend_headers(deja: Deja) -> None:
    key = await new_key(deja, "acme")
    no_store = {"Cache-Control": "no-store"}
    _, first, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("a"), key=key["key"], headers=no_store)
    _, second, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("b"), key=key["key"], headers=no_store)
    cost = float(first["x-litellm-response-cost"])
    assert cost > 0 and first["x-deja-response-cost"] == first["x-litellm-response-cost"]
    assert float(first["x-litellm-key-spend"]) == pytest.approx(cost)
    assert float(second["x-deja-key-spend"]) == pytest.approx(cost + float(second["x-litellm-response-cost"]))
    _, streamed, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("c", stream=True), key=key["key"],
                                headers=no_store)
    assert "x-litellm-response-cost" not in streamed  # not known when a stream's headers go out
    assert float(streamed["x-litellm-key-spend"]) == pytest.approx(float(second["x-deja-key-spend"]))
    await call(deja, "POST", "/v1/chat/completions", chat_body("a"), key=key["key"])  # a miss, stored
    await deja.settled()
    _, hit, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("a"), key=key["key"])
    assert hit["X-Deja-Cache"] == "hit-exact" and float(hit["x-litellm-response-cost"]) == 0.0
    found = await rows(deja, 5)
    assert sum(r["cost_usd"] for r in found.values()) == pytest.approx(float(hit["x-litellm-key-spend"]))
    _, master, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("m"), headers=no_store)
    assert "x-litellm-key-spend" not in master and "x-litellm-response-cost" in master  # not a virtual key


async def test_prometheus_spend_by_model_tenant_and_allowed_tags(deja: Deja) -> None:
    keys = [await new_key(deja, tenant) for tenant in ("acme", "globex", "initech")]
    for key in keys:
        status, _, _ = await call(deja, "POST", "/v1/chat/completions", chat_body("hi", metadata={"tags": ["prod",
                                  "secret-project"]}), key=key["key"], headers={"Cache-Control": "no-store"})
        assert status == 200
    found = await rows(deja, 3)
    async with aiohttp.ClientSession() as s:
        metrics = await scrape(s, deja.url)
    costs = {r["tenant"]: r["cost_usd"] for r in found.values()}
    assert metrics.value("deja_cost_usd_total", model="gpt-4o-mini", tenant="acme") == pytest.approx(costs["acme"])
    assert metrics.value("deja_cost_usd_total", tenant="globex") == pytest.approx(costs["globex"])
    assert metrics.value("deja_cost_usd_total", tenant="initech") == 0  # past max_tenants (2): "other"
    assert metrics.value("deja_cost_usd_total", tenant="other") == pytest.approx(costs["initech"])
    assert metrics.value("deja_tokens_total", kind="completion", tenant="acme", model="gpt-4o-mini") == 7
    assert metrics.value("deja_tag_cost_usd_total", tag="prod") == pytest.approx(sum(costs.values()))
    assert metrics.value("deja_tag_requests_total", tag="prod", model="gpt-4o-mini") == 3
    assert not [k for k in metrics.samples if "secret-project" in str(k)]  # not allow-listed: not exported
