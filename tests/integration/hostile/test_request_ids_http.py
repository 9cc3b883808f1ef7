"""Request ids are unique per request: a reused ``X-Request-Id`` (by one client, or by two tenants) still gives
every answered request its own usage row (it was 50 answered requests → 1 row, and tenant B's row lost)."""

from __future__ import annotations

import asyncio

from tests.integration.harness import Deja
from tests.integration.hostile.conftest import MASTER, usage_rows
from tests.integration.hostile.helpers import raw_request

JSON = (b"Content-Type", b"application/json")
AUTH = (b"Authorization", b"Bearer " + MASTER.encode())
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "same id"}]}'


async def _key(deja: Deja, tenant: str) -> tuple[bytes, bytes]:
    r = await raw_request(deja.port, "POST", "/admin/keys", headers=[AUTH, JSON],
                          body=b'{"name": "k", "tenant": "' + tenant.encode() + b'"}')
    assert r.status == 201
    return (b"Authorization", b"Bearer " + r.json()["key"].encode())


async def test_a_reused_request_id_gets_a_row_per_request(deja: Deja) -> None:
    keys = {"acme": await _key(deja, "acme"), "globex": await _key(deja, "globex")}
    reused = (b"X-Request-Id", b"trace-7")
    no_store = (b"Cache-Control", b"no-store")

    async def ask(tenant: str) -> str:
        r = await raw_request(deja.port, "POST", "/v1/chat/completions", headers=[keys[tenant], JSON, reused,
                                                                                 no_store], body=BODY)
        assert r.status == 200
        assert r.headers["x-request-id"] == r.headers["x-deja-request-id"]
        return r.headers["x-deja-request-id"]

    ids = await asyncio.gather(*(ask("acme") for _ in range(25)), *(ask("globex") for _ in range(25)))
    assert len(set(ids)) == 50 and all(i.startswith("trace-7.") for i in ids)
    rows = await usage_rows(deja, 50)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert sorted(r["tenant"] for r in rows) == ["acme"] * 25 + ["globex"] * 25


async def test_an_ill_formed_request_id_is_replaced(deja: Deja) -> None:
    r = await raw_request(deja.port, "GET", "/v1/models", headers=[AUTH, (b"X-Request-Id", b"bad id/../" + b"x" * 200)])
    assert r.status == 200 and r.headers["x-deja-request-id"].startswith("req_")
