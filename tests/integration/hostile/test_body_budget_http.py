"""Through the real app: a large body waits while the budget is full, a small request meanwhile does not, and
every one of them is answered once the first is done."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from providers.fake_openai import FakeOpenAI
from router.http.inflight import BODY_BUDGET
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.hostile.helpers import RawResponse, raw_request
from tests.integration.router.storage.helpers import wait_for

JSON = (b"Content-Type", b"application/json")
NO_STORE = (b"Cache-Control", b"no-store")


def body(text: str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()


class GatedUpstream(FakeOpenAI):
    """A fake upstream that holds every large request until ``gate`` opens: a slow upstream, without sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if len(await request.read()) > 100_000:
            await self.gate.wait()
        return await super()._chat(request)


@pytest.fixture
async def gated() -> AsyncIterator[GatedUpstream]:
    async with GatedUpstream() as up:
        yield up


@pytest.fixture
async def deja(tmp_path: Path, gated: GatedUpstream) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, gated, cache={"semantic": False},
                                            inflight_body_bytes=150 * 1024))
    yield server
    await server.close()


async def test_a_large_body_waits_for_the_budget_and_a_small_one_does_not(deja: Deja, gated: GatedUpstream) -> None:
    budget = deja.app[BODY_BUDGET]
    large = "lorem ipsum " * 10_000  # 120 KB: two do not fit in 150 KB

    def send(text: str) -> asyncio.Task[RawResponse]:
        return asyncio.create_task(raw_request(deja.port, "POST", "/v1/chat/completions", headers=[JSON, NO_STORE],
                                               body=body(text)))

    first = send(large)
    await wait_for(lambda: budget.used > 0)
    second = send(large + " again")
    await wait_for(lambda: len(budget._waiters) == 1)
    small = await send("a small question")
    assert small.status == 200 and len(budget._waiters) == 1  # answered while the large one still waits
    assert len(gated.received) == 1  # the small one; the first large is held at the upstream, unrecorded
    gated.gate.set()
    assert [r.status for r in await asyncio.gather(first, second)] == [200, 200]
    assert budget.used == 0 and budget.waited == 1
