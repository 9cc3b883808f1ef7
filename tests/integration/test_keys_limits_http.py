"""Virtual keys, rate limits and budgets through the HTTP API, in one process and across replicas."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja

MASTER = "sk-master-test"
NO_STORE = {"Cache-Control": "no-store"}


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER, cache={"semantic": False}))
    yield server
    await server.close()


async def admin(server: Deja, method: str, path: str, body: Any = None,
                key: str = MASTER) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s, s.request(
            method, server.url + path, json=body) as r:
        return r.status, await r.json()


async def new_key(server: Deja, **fields: Any) -> tuple[str, str]:
    status, body = await admin(server, "POST", "/admin/keys", {"name": "t", **fields})
    assert status == 201, body
    assert body["key"].startswith("sk-deja-")
    return body["id"], body["key"]


async def chat(server: Deja, key: str, text: str = "hi", **extra: Any) -> tuple[int, dict[str, str], dict]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    async with aiohttp.ClientSession() as s, s.post(server.base_url + "/chat/completions", json=body,
                                                    headers={"Authorization": f"Bearer {key}", **NO_STORE}) as r:
        return r.status, dict(r.headers), await r.json()


async def test_key_lifecycle_and_auth_errors(deja: Deja) -> None:
    key_id, secret = await new_key(deja, tenant="acme", allowed_models=["gpt-4o-mini"])
    client = openai.AsyncOpenAI(base_url=deja.base_url, api_key=secret, max_retries=0)
    assert (await client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": "hello"}])).choices[0].message.content == "Answer to: hello"
    status, listing = await admin(deja, "GET", "/admin/keys?tenant=acme")
    assert status == 200 and [k["id"] for k in listing["data"]] == [key_id]
    assert "secret_hash" not in listing["data"][0] and "key" not in listing["data"][0]
    assert (await admin(deja, "GET", "/admin/keys?tenant=other"))[1]["data"] == []
    status, _ = await admin(deja, "DELETE", f"/admin/keys/{key_id}")
    assert status == 200
    with pytest.raises(openai.AuthenticationError) as revoked:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert revoked.value.response.json()["error"]["code"] == "invalid_api_key"
    for bad in ("", "sk-deja-not-a-real-key"):
        status, _, body = await chat(deja, bad)
        assert status == 401 and set(body["error"]) == {"message", "type", "param", "code"}
    status, _, _ = await chat(deja, MASTER)
    assert status == 200


async def test_azure_style_api_key_header(deja: Deja) -> None:
    _, secret = await new_key(deja)
    async with aiohttp.ClientSession() as s, s.get(deja.base_url + "/models", headers={"api-key": secret}) as r:
        assert r.status == 200


async def test_model_not_allowed_is_403(deja: Deja) -> None:
    _, secret = await new_key(deja, allowed_models=["other-model"])
    status, _, body = await chat(deja, secret)
    assert status == 403 and body["error"]["type"] == "permission_error"
    status, _ = await admin(deja, "GET", "/admin/keys", key=secret)
    assert status == 403


async def test_rpm_limit_exactly(deja: Deja) -> None:
    _, secret = await new_key(deja, rpm=5)
    results = [await chat(deja, secret, f"q{i}") for i in range(7)]
    assert [s for s, _, _ in results] == [200] * 5 + [429] * 2
    _, headers, body = results[5]
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert 55 <= int(headers["Retry-After"]) <= 60
    ok_headers = results[0][1]
    assert ok_headers["x-ratelimit-limit-requests"] == "5"
    assert ok_headers["x-ratelimit-remaining-requests"] == "4"
    assert results[4][1]["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_corrected_with_real_usage(deja: Deja, upstream: FakeOpenAI) -> None:
    _, secret = await new_key(deja, tpm=100)
    upstream.script(Behaviour(usage={"prompt_tokens": 5, "completion_tokens": 85, "total_tokens": 90}))
    status, headers, _ = await chat(deja, secret, max_tokens=10)
    assert status == 200 and headers["x-ratelimit-limit-tokens"] == "100"
    await deja.settled()
    # the estimate (~prompt + 10) fits in 100, but the real usage (90) leaves only 10
    status, headers, body = await chat(deja, secret, max_tokens=10)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert "Retry-After" in headers


async def test_budget_exhaustion(deja: Deja, upstream: FakeOpenAI) -> None:
    _, secret = await new_key(deja, budget_usd=0.1, budget_period="daily")
    usage = {"prompt_tokens": 100_000, "completion_tokens": 100_000, "total_tokens": 200_000}  # $0.075
    for _ in range(2):
        upstream.script(Behaviour(usage=usage))
        status, _, _ = await chat(deja, secret)
        assert status == 200
        await deja.settled()
    status, headers, body = await chat(deja, secret)
    assert status == 429 and body["error"]["type"] == "insufficient_quota"
    assert int(headers["Retry-After"]) > 0


async def test_two_replicas_share_one_limit(tmp_path: Path, upstream: FakeOpenAI, redis_url: str,
                                            redis_prefix: str, database_url: str, pg_schema: str) -> None:
    settings = make_settings(tmp_path, upstream, master_key=MASTER, redis_url=redis_url,
                             redis_prefix=redis_prefix, database_url=database_url, cache={"semantic": False})
    one = await start_deja(settings, db_schema=pg_schema)
    two = await start_deja(settings, db_schema=pg_schema)
    try:
        _, secret = await new_key(one, rpm=5)
        statuses = [(await chat(server, secret, f"q{i}"))[0] for i in range(5) for server in (one, two)]
        assert statuses.count(200) == 5 and statuses.count(429) == 5
        key_id, other = await new_key(one)
        assert (await chat(two, other))[0] == 200  # replica two now holds the key in its 1 s cache
        assert (await admin(one, "DELETE", f"/admin/keys/{key_id}"))[0] == 200
        assert (await chat(one, other))[0] == 401  # at once on the replica that revoked it
        deadline = time.monotonic() + 1.0 + 1.5  # key_cache_ttl (1 s) plus scheduling slack
        while (status := (await chat(two, other))[0]) != 401 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert status == 401
    finally:
        await one.close()
        await two.close()


def _dead_redis_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize("mode,expected", [("closed", 503), ("open", 200)])
async def test_redis_down_follows_failure_mode(tmp_path: Path, upstream: FakeOpenAI, mode: str,
                                               expected: int) -> None:
    settings = make_settings(tmp_path, upstream, master_key=MASTER, redis_url=_dead_redis_url(),
                             cache={"enabled": False}, limits={"backend": "redis", "failure_mode": mode})
    server = await start_deja(settings)
    try:
        _, secret = await new_key(server, rpm=5)
        status, _, body = await chat(server, secret)
        assert status == expected, body
        async with aiohttp.ClientSession() as s, s.get(server.url + "/metrics") as r:
            text = await r.text()
        assert "deja_ratelimit_backend_errors_total 1.0" in text
    finally:
        await server.close()
