"""The gateway as a platform team runs it, through the HTTP app (fake upstream, real SQLite and PostgreSQL):
key activity on the key record, one stored request by id (tenant-scoped), usage by end user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import STORAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, drop_storage, make_settings, start_deja, storage_section
from tests.integration.router.storage.helpers import wait_for

MASTER = "sk-master-test"
USAGE = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(default=Behaviour(usage=USAGE)) as up:
        yield up


@pytest.fixture(params=["sqlite", "postgresql"])
async def deja(request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    extra = storage_section(request, request.param)
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER, cache={"enabled": False},
                                            **extra))
    yield server
    await server.close()
    await drop_storage(extra)


async def call(server: Deja, method: str, path: str, body: Any = None, key: str = MASTER,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}", **(headers or {})}) as s, \
            s.request(method, server.url + path, json=body) as r:
        return r.status, dict(r.headers), await r.json()


async def chat(server: Deja, key: str, text: str, **extra: Any) -> tuple[int, dict[str, str], Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    return await call(server, "POST", "/v1/chat/completions", body, key=key)


async def new_key(server: Deja, **fields: Any) -> dict[str, Any]:
    status, _, body = await call(server, "POST", "/admin/keys", {"name": "t", **fields})
    assert status == 201, body
    return body


async def rows(server: Deja, expected: int) -> list[dict[str, Any]]:
    storage = server.app[STORAGE]

    async def enough() -> bool:
        return len((await storage.list_requests(UsageFilter(), limit=500))[0]) >= expected

    await wait_for(enough, timeout=20)
    return (await storage.list_requests(UsageFilter(), limit=500))[0]


async def test_the_key_record_shows_spend_requests_and_last_use(deja: Deja) -> None:
    key = await new_key(deja, tenant="acme")
    assert (key["spend_usd"], key["requests"], key["last_used_at"]) == (0.0, 0, None)
    for i in range(3):
        assert (await chat(deja, key["key"], f"question {i}"))[0] == 200
    assert (await chat(deja, MASTER, "not this key's"))[0] == 200
    found = await rows(deja, 4)
    mine = [r for r in found if r["key_id"] == key["id"]]
    status, _, record = await call(deja, "GET", f"/admin/keys/{key['id']}")
    assert status == 200 and record["requests"] == 3
    assert record["spend_usd"] == pytest.approx(sum(r["cost_usd"] for r in mine)) and record["spend_usd"] > 0
    assert record["last_used_at"] == pytest.approx(max(r["ts"] for r in mine))
    _, _, listing = await call(deja, "GET", "/admin/keys")
    (listed,) = [k for k in listing["data"] if k["id"] == key["id"]]
    assert {k: listed[k] for k in ("spend_usd", "requests", "last_used_at")} == {
        k: record[k] for k in ("spend_usd", "requests", "last_used_at")}
    _, _, updated = await call(deja, "PATCH", f"/admin/keys/{key['id']}", {"rpm": 50})
    assert updated["requests"] == 3 and updated["rpm"] == 50


async def test_one_stored_request_by_id_scoped_to_the_tenant(deja: Deja) -> None:
    acme, acme_too, globex = (await new_key(deja, tenant="acme"), await new_key(deja, tenant="acme"),
                              await new_key(deja, tenant="globex"))
    status, headers, answer = await chat(deja, acme["key"], "what is stored?", user="end-user-9")
    assert status == 200
    request_id = headers["X-Deja-Request-Id"]
    await rows(deja, 1)
    status, _, stored = await call(deja, "GET", f"/admin/requests/{request_id}")
    assert status == 200 and stored["object"] == "request" and stored["request_id"] == request_id
    assert stored["request_body"] == [{"role": "user", "content": "what is stored?"}]
    assert stored["response_body"]["choices"][0]["message"] == answer["choices"][0]["message"]
    assert (stored["key_id"], stored["tenant"], stored["end_user"]) == (acme["id"], "acme", "end-user-9")
    assert (await call(deja, "GET", f"/admin/requests/{request_id}", key=acme_too["key"]))[2] == stored
    status, _, body = await call(deja, "GET", f"/admin/requests/{request_id}", key=globex["key"])
    assert status == 404 and body["error"]["code"] == "request_not_found"
    status, _, body = await call(deja, "GET", "/admin/requests/req_unknown")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert (await call(deja, "GET", f"/admin/requests/{request_id}", key="sk-deja-wrong"))[0] == 401


async def test_usage_by_end_user(deja: Deja) -> None:
    for user in ("alice", "alice", "bob", None):
        assert (await chat(deja, MASTER, f"hello from {user}", **({"user": user} if user else {})))[0] == 200
    await rows(deja, 4)
    status, _, body = await call(deja, "GET", "/admin/usage?group_by=user")
    assert status == 200 and {r["group"]: r["requests"] for r in body["data"]} == {"alice": 2, "bob": 1, None: 1}
    _, _, body = await call(deja, "GET", "/admin/usage?user=alice&group_by=model")
    assert [(r["group"], r["requests"]) for r in body["data"]] == [("gpt-4o-mini", 2)]
