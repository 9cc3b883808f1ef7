"""The Responses and Completions flows on their own: the real app, the in-process provider (tests/fakes.py).

Each test checks the answer, the usage row and ``deja_requests_total`` together.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from providers.errors import ProviderTimeoutError
from router.app import create_app
from router.appkeys import BACKGROUND
from router.config import load_settings
from tests.fakes import FakeProvider
from tests.unit.router.pipeline.test_chat_flow import MODEL, provider, requests_metric, rows


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = load_settings(environ={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'deja.db'}", "cache": {"semantic": False, "backend": "memory"},
        "limits": {"backend": "memory"}, "usage": {"flush_interval": 0.05, "spill_path": str(tmp_path / "s.jsonl")}})
    app = create_app(settings, provider=FakeProvider([MODEL]))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_responses_miss_hit_and_failure_agree(client: TestClient) -> None:
    provider(client).script("bonjour", ProviderTimeoutError("slow", upstream_status=504))
    first = await client.post("/v1/responses", json={"model": MODEL, "input": "hello"})
    body = await first.json()
    assert first.headers["X-Deja-Cache"] == "miss" and body["output"][0]["content"][0]["text"] == "bonjour"
    tasks = list(client.app[BACKGROUND])  # the cache store runs after the answer
    if tasks:
        await asyncio.wait(tasks)
    hit = await client.post("/v1/responses", json={"model": MODEL, "input": "hello", "stream": True})
    text = await hit.text()
    assert hit.headers["X-Deja-Cache"] == "hit-exact" and len(provider(client).calls) == 1
    assert "event: response.completed" in text and "[DONE]" not in text
    failed = await client.post("/v1/responses", json={"model": MODEL, "input": "other", "stream": False})
    assert failed.status == 504 and (await failed.json())["error"]["type"]
    found = sorted((r["route"], r["status"]) for r in (await rows(client)).values())
    assert found == [("responses", 200), ("responses", 200), ("responses", 504)]
    assert requests_metric(client)[("responses", "200")] == 2 and requests_metric(client)[("responses", "504")] == 1


async def test_completions_stream_hides_the_usage_it_was_not_asked_for(client: TestClient) -> None:
    response = await client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "stream": True})
    events = [json.loads(line[6:]) for line in (await response.text()).splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in events if c["choices"]) == "the fake answer"
    assert all("usage" not in c for c in events)
    row = next(iter((await rows(client)).values()))
    assert (row["route"], row["status"], row["completion_tokens"]) == ("completions", 200, 3)
