"""The request pipeline on its own: the real app, an in-process provider (tests/fakes.py), SQLite, memory cache.

Every test checks what a request left behind: the answer, the usage row, ``deja_requests_total`` and the
access-log line, which must agree.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from compression import count_text_tokens
from providers.errors import ProviderRateLimitError, ProviderTimeoutError, UnsupportedError
from router.app import create_app
from router.appkeys import METRICS, PROVIDER, STORAGE, USAGE
from router.config import load_settings
from router.storage import UsageFilter
from tests.fakes import Cut, FakeProvider

MODEL = "fake-model"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = load_settings(environ={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'deja.db'}", "cache": {"semantic": False, "backend": "memory"},
        "limits": {"backend": "memory"}, "usage": {"flush_interval": 0.05, "spill_path": str(tmp_path / "s.jsonl")}})
    app = create_app(settings, provider=FakeProvider([MODEL]))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def provider(client: TestClient) -> FakeProvider:
    found = client.app[PROVIDER]
    assert isinstance(found, FakeProvider)
    return found


async def rows(client: TestClient) -> dict[str, dict[str, Any]]:
    await client.app[USAGE].flush()
    found, _ = await client.app[STORAGE].list_requests(UsageFilter(), limit=100)
    return {row["request_id"]: row for row in found}


def requests_metric(client: TestClient) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in client.app[METRICS].render().decode().splitlines():
        if line.startswith("deja_requests_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            key = (labels["route"].strip('"'), labels["status"].strip('"'))
            out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def access_lines(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    return {r.event["request_id"]: r.event for r in caplog.records  # type: ignore[attr-defined]
            if r.name == "deja.access" and hasattr(r, "event")}


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


async def sse_events(response: Any) -> list[Any]:
    text = await response.text()
    return [json.loads(line[6:]) if line[6:] != "[DONE]" else "[DONE]"
            for line in text.splitlines() if line.startswith("data: ")]


async def test_a_miss_is_answered_accounted_and_then_served_from_the_cache(client: TestClient,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deja.access")
    first = await client.post("/v1/chat/completions", json=chat("What is deja?"))
    second = await client.post("/v1/chat/completions", json=chat("What is deja?"))
    assert (first.status, second.status) == (200, 200)
    assert (first.headers["X-Deja-Cache"], second.headers["X-Deja-Cache"]) == ("miss", "hit-exact")
    assert first.headers["X-Request-Id"] == first.headers["X-Deja-Request-Id"]
    assert [kind for kind, _ in provider(client).calls] == ["complete"]
    found = await rows(client)
    miss, hit = found[first.headers["X-Request-Id"]], found[second.headers["X-Request-Id"]]
    assert (miss["cache"], miss["status"], miss["deployment"], miss["completion_tokens"]) == ("miss", 200,
                                                                                            f"{MODEL}#0", 3)
    assert miss["prompt_tokens_sent"] == 11 and miss["cost_usd"] == pytest.approx(11e-6 + 3 * 2e-6)
    assert (hit["cache"], hit["cost_usd"], hit["completion_tokens"]) == ("exact", 0, 3)
    assert hit["saved_cache_usd"] > 0
    assert requests_metric(client)[("chat", "200")] == 2
    logged = access_lines(caplog)
    assert logged[first.headers["X-Request-Id"]]["cache"] == "miss"
    assert logged[second.headers["X-Request-Id"]]["cache"] == "exact"


async def test_a_stream_is_relayed_and_counted(client: TestClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat("stream me", stream=True))
    events = await sse_events(response)
    assert events[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"])
    assert text == "one two three four five "
    assert all("usage" not in c for c in events[:-1])  # the client did not ask for usage
    row = (await rows(client))[response.headers["X-Request-Id"]]
    assert (row["status"], row["stream"], row["completion_tokens"], row["prompt_tokens_sent"]) == (200, True, 5, 11)
    assert provider(client).closed_streams == 1


async def test_an_upstream_refusal_before_the_answer_is_the_answer_status_everywhere(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deja.access")
    provider(client).script(ProviderRateLimitError("slow down, key sk-secret123456 is busy", retry_after=3,
                                                   upstream_status=429, provider="openai"))
    response = await client.post("/v1/chat/completions", json=chat("limited"))
    body = await response.json()
    rid = response.headers["X-Request-Id"]
    assert (response.status, response.headers["Retry-After"]) == (429, "3")
    assert body["error"]["code"] == "upstream_rate_limited" and "sk-secret123456" not in body["error"]["message"]
    assert "openai" in body["error"]["message"] and "429" in body["error"]["message"]
    assert (await rows(client))[rid]["status"] == 429
    assert requests_metric(client)[("chat", "429")] == 1
    line = access_lines(caplog)[rid]
    assert line["status"] == 429 and "sk-secret123456" in line["upstream_message"]  # the full text: log only


async def test_a_stream_cut_after_its_headers_is_one_in_band_error_with_one_status(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deja.access")
    provider(client).script(Cut(after=2, error=ProviderTimeoutError("read timed out", upstream_status=None)))
    response = await client.post("/v1/chat/completions", json=chat("cut me", stream=True))
    assert response.status == 200  # the headers went out before the failure
    events = await sse_events(response)
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "timeout"
    rid = response.headers["X-Request-Id"]
    row = (await rows(client))[rid]
    delivered = count_text_tokens("one two ", MODEL)
    assert (row["status"], row["completion_tokens"]) == (504, delivered)  # what was delivered is still accounted
    assert requests_metric(client)[("chat", "504")] == 1
    assert access_lines(caplog)[rid]["status"] == 504
    again = await client.post("/v1/chat/completions", json=chat("cut me", stream=True))
    assert again.headers["X-Deja-Cache"] == "miss"  # an incomplete answer is never cached
    await again.read()


async def test_no_store_neither_reads_nor_writes_the_cache(client: TestClient) -> None:
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=chat("private"),
                                     headers={"Cache-Control": "no-store"})
        assert response.headers["X-Deja-Cache"] == "bypass"
    assert len(provider(client).calls) == 2


async def test_client_mistakes_are_4xx_and_leave_no_upstream_call(client: TestClient) -> None:
    unknown = await client.post("/v1/chat/completions", json={**chat("x"), "model": "nope"})
    invalid = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert (unknown.status, invalid.status) == (404, 400)
    assert (await unknown.json())["error"]["param"] == "model"
    assert provider(client).calls == []
    assert requests_metric(client) == {("chat", "404"): 1, ("chat", "400"): 1}


async def test_embeddings_share_the_accounting(client: TestClient) -> None:
    ok = await client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]})
    provider(client).script(UnsupportedError("fake-model does not support embeddings"))
    refused = await client.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert (ok.status, refused.status) == (200, 400)
    assert len((await ok.json())["data"]) == 2
    found = await rows(client)
    assert found[ok.headers["X-Request-Id"]]["prompt_tokens_sent"] == 6
    assert found[refused.headers["X-Request-Id"]]["status"] == 400
    assert requests_metric(client) == {("embeddings", "200"): 1, ("embeddings", "400"): 1}


async def test_a_bug_is_a_500_that_is_logged_with_its_cause_and_accounted(client: TestClient,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deja")
    provider(client).script(RuntimeError("a bug in a provider"))
    response = await client.post("/v1/chat/completions", json=chat("trip over it"))
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (500, "internal_error")
    assert "a bug in a provider" not in body["error"]["message"]  # no internals to the client
    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged.exc_info is not None and "a bug in a provider" in repr(logged.exc_info[1].__cause__)
    assert (await rows(client))[response.headers["X-Request-Id"]]["status"] == 500


async def test_the_in_progress_count_the_cache_step_reads_returns_to_zero(client: TestClient) -> None:
    answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat(f"question {i}")) for i in range(8)),
                                   client.post("/v1/chat/completions", data=b"{not json"))
    assert [a.status for a in answers] == [200] * 8 + [400]
    assert client.app[METRICS].in_progress == 0
