"""``limits.default_*`` and ``limits.tenant_budgets`` through the real app, with the in-memory limiter and with
a real Redis; /health/deployments for dashboards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja

MASTER = "sk-master-test"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
NO_STORE = {"Cache-Control": "no-store"}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Behaviour(usage=USAGE)) as up:
        yield up


@pytest.fixture(params=["memory", "redis"])
async def start(request: pytest.FixtureRequest, tmp_path: Path,
                upstream: FakeOpenAI) -> AsyncIterator[Callable[..., Any]]:
    servers: list[Deja] = []
    extra: dict[str, Any] = {}
    if request.param == "redis":
        import uuid

        extra = {"redis_url": request.getfixturevalue("redis_url"),
                 "redis_prefix": f"dejatest:{uuid.uuid4().hex[:12]}:", "limits": {"backend": "redis"}}

    async def run(**limits: Any) -> Deja:
        section = {**extra.get("limits", {}), **limits}
        server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER, cache={"enabled": False},
                                                **{**extra, "limits": section}))
        servers.append(server)
        return server

    yield run
    for server in servers:
        await server.close()
    if extra:
        import redis.asyncio as aioredis

        client = aioredis.from_url(extra["redis_url"])
        keys = [k async for k in client.scan_iter(match=extra["redis_prefix"] + "*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def call(server: Deja, method: str, path: str, body: Any = None, key: str = MASTER) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}", **NO_STORE}) as s, \
            s.request(method, server.url + path, json=body) as r:
        return r.status, r.headers.copy(), await r.json()


async def chat(server: Deja, key: str) -> tuple[int, Any, Any]:
    return await call(server, "POST", "/v1/chat/completions",
                      {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, key=key)


async def key(server: Deja, **fields: Any) -> str:
    status, _, body = await call(server, "POST", "/admin/keys", {"name": "k", **fields})
    assert status == 201, body
    return str(body["key"])


async def test_keys_without_their_own_limits_get_the_defaults(start: Callable[..., Any]) -> None:
    server = await start(default_rpm=2)
    plain, own = await key(server), await key(server, rpm=4)
    statuses = [(await chat(server, plain))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, _ = await chat(server, own)
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "4"
    assert [(await chat(server, MASTER))[0] for _ in range(3)] == [200] * 3  # the master key is not a key


async def test_a_tenant_budget_stops_every_key_of_the_tenant(start: Callable[..., Any]) -> None:
    server = await start(tenant_budgets={"acme": {"budget_usd": 0.0001, "budget_period": "1d"}})
    first, second, other = (await key(server, tenant="acme"), await key(server, tenant="acme"),
                            await key(server, tenant="globex"))
    assert (await chat(server, first))[0] == 200  # 2,000 tokens of gpt-4o-mini: more than the budget
    await server.settled()
    status, headers, body = await chat(server, second)
    assert status == 429 and body["error"]["type"] == "insufficient_quota" and "tenant" in body["error"]["message"]
    assert int(headers["Retry-After"]) > 0
    assert (await chat(server, other))[0] == 200


async def test_default_budget_with_a_period(start: Callable[..., Any]) -> None:
    server = await start(default_budget=0.0001, default_budget_period="1h")
    plain = await key(server)
    assert (await chat(server, plain))[0] == 200
    await server.settled()
    status, headers, body = await chat(server, plain)
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert 0 < int(headers["Retry-After"]) <= 3600


async def test_deployment_health(start: Callable[..., Any], upstream: FakeOpenAI) -> None:
    server = await start()
    async with aiohttp.ClientSession() as s, s.get(server.url + "/health/deployments") as r:
        body = await r.json()
    assert r.status == 200 and (body["healthy"], body["total"]) == (1, 1)
    (one,) = body["data"]
    assert one == {"deployment": "gpt-4o-mini#0", "model_group": "gpt-4o-mini", "model": "openai/gpt-4o-mini",
                   "reachable": True, "cooling_down": False, "healthy": True}
    await upstream.close()
    async with aiohttp.ClientSession() as s, s.get(server.url + "/health/deployments") as r:
        body = await r.json()
    assert r.status == 200 and body["healthy"] == 0 and body["data"][0]["reachable"] is False
