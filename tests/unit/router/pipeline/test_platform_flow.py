"""The pipeline's platform pieces on their own (the real app, an in-process provider): what the provider is given
to forward, the tags and trace id on the usage row, the cost header, and a bad tag refused before any call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.app import create_app
from router.appkeys import PROVIDER, STORAGE, USAGE
from router.config import load_settings
from router.storage import UsageFilter
from tests.fakes import FakeProvider

MODEL = "fake-model"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = load_settings(environ={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'deja.db'}", "cache": {"enabled": False},
        "limits": {"backend": "memory"}, "usage": {"flush_interval": 0.05, "spill_path": str(tmp_path / "s.jsonl")}})
    async with TestClient(TestServer(create_app(settings, provider=FakeProvider([MODEL])))) as test_client:
        yield test_client


async def test_the_provider_gets_the_trace_and_the_row_keeps_it(client: TestClient) -> None:
    for kind in ("chat", "stream", "embeddings"):
        path = "/v1/embeddings" if kind == "embeddings" else "/v1/chat/completions"
        body = {"model": MODEL, "input": "hi"} if kind == "embeddings" else {
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": kind == "stream",
            "metadata": {"tags": ["prod"], "run": "1"}}
        response = await client.post(path, json=body, headers={"traceparent": TRACEPARENT, "x-deja-tags": kind})
        assert response.status == 200
        await response.read()
    fake = client.app[PROVIDER]
    assert isinstance(fake, FakeProvider)
    assert [h["traceparent"] for h in fake.headers] == [TRACEPARENT] * 3
    assert all(h["X-Request-Id"].startswith("req_") for h in fake.headers)
    assert fake.calls[0][1]["metadata"] == {"run": "1"}  # the tags are not the model's
    await client.app[USAGE].flush()
    rows, _ = await client.app[STORAGE].list_requests(UsageFilter(), limit=10)
    assert {r["trace_id"] for r in rows} == {"0af7651916cd43dd8448eb211c80319c"}
    assert sorted(json.loads(r["tags"])[-1] for r in rows) == ["chat", "embeddings", "stream"]
    assert {r["request_id"] for r in rows} == {h["X-Request-Id"] for h in fake.headers}


async def test_the_answer_says_what_it_cost(client: TestClient) -> None:
    response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}]})
    data = await response.json()
    usage = data["usage"]
    assert float(response.headers["x-litellm-response-cost"]) == pytest.approx(
        usage["prompt_tokens"] * 1e-6 + usage["completion_tokens"] * 2e-6)
    assert "x-litellm-key-spend" not in response.headers  # open mode: no virtual key


async def test_a_bad_tag_is_refused_before_the_provider_is_called(client: TestClient) -> None:
    response = await client.post("/v1/chat/completions", headers={"x-litellm-tags": "ok," + "x" * 200}, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 400 and (await response.json())["error"]["param"] == "x-litellm-tags"
    fake = client.app[PROVIDER]
    assert isinstance(fake, FakeProvider) and fake.calls == []
