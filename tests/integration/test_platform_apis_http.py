"""The Responses and Completions APIs carry the platform pieces too: the trace context and request id reach the
upstream (through LiteLLM), the usage row keeps tags and the trace id, JSON answers say what they cost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from providers.fake_openai import FakeOpenAI
from router.appkeys import STORAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.router.storage.helpers import wait_for

TRACEPARENT = "00-11112222333344445555666677778888-1111222233334444-01"


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    key = {"api_base": upstream.base_url, "api_key": "sk-fake"}
    models = [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", **key}},
              {"model_name": "instruct", "litellm_params": {"model": "text-completion-openai/gpt-3.5-turbo-instruct",
                                                            **key}}]
    server = await start_deja(make_settings(tmp_path, config={"model_list": models, "router_settings": {
        "num_retries": 0}}, cache={"enabled": False}))
    yield server
    await server.close()


CALLS = [("/v1/responses", {"model": "gpt-4o-mini", "input": "hello"}),
         ("/v1/completions", {"model": "instruct", "prompt": "hello"})]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body"), CALLS)
async def test_trace_tags_and_cost_on_the_other_apis(deja: Deja, upstream: FakeOpenAI, path: str,
                                                     body: dict[str, Any], stream: bool) -> None:
    async with aiohttp.ClientSession() as s, s.post(
            deja.url + path, json={**body, "stream": stream, "metadata": {"tags": ["prod"], "run": "1"}},
            headers={"traceparent": TRACEPARENT, "x-deja-tags": "batch"}) as r:
        await r.read()
        assert r.status == 200
        request_id = r.headers["X-Deja-Request-Id"]
        assert ("x-litellm-response-cost" in r.headers) is not stream
    (received,) = upstream.received
    assert received.path == path
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["traceparent"] == TRACEPARENT and headers["x-request-id"] == request_id
    assert received.body.get("metadata") in ({"run": "1"}, None)  # never the tags
    storage = deja.app[STORAGE]

    async def written() -> bool:
        return bool((await storage.list_requests(UsageFilter(), limit=5))[0])

    await wait_for(written, timeout=20)
    (row,), _ = await storage.list_requests(UsageFilter(), limit=5)
    assert row["request_id"] == request_id and row["trace_id"] == "11112222333344445555666677778888"
    assert json.loads(row["tags"]) == ["prod", "batch"] and json.loads(row["metadata"])["run"] == "1"
