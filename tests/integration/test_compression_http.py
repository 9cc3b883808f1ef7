"""Compression through the HTTP API: the upstream receives fewer tokens, headers say how many; ``off`` is exact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from compression import count_tokens
from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja, make_settings, start_deja

REPORT = {"service": "billing", "status": "degraded", "regions": [
    {"name": f"region-{i}", "latency_ms": [120, 180, 240], "errors": {"5xx": i, "4xx": 2 * i}} for i in range(12)]}
WASTEFUL = ("Please   summarise   this   report.\n\n\n\n\n" + json.dumps(REPORT, indent=4) +
            "\n\n\n\nThanks    a lot.   ")


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream, cache={"enabled": False}))
    yield server
    await server.close()


async def post(server: Deja, messages: list[dict], headers: dict[str, str] | None = None) -> dict[str, str]:
    body = {"model": "gpt-4o-mini", "messages": messages}
    async with aiohttp.ClientSession() as s, s.post(server.base_url + "/chat/completions", json=body,
                                                    headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        return dict(r.headers)


async def test_upstream_receives_fewer_tokens(deja: Deja, upstream: FakeOpenAI) -> None:
    messages = [{"role": "system", "content": "You are   terse."}, {"role": "user", "content": WASTEFUL}]
    headers = await post(deja, messages)
    sent = upstream.received[-1].body["messages"]
    original, forwarded = count_tokens(messages, "gpt-4o-mini"), count_tokens(sent, "gpt-4o-mini")
    assert forwarded < original
    assert int(headers["X-Deja-Prompt-Tokens-Original"]) == original
    assert int(headers["X-Deja-Prompt-Tokens-Sent"]) == forwarded
    forwarded_json = sent[1]["content"][sent[1]["content"].index("{"):sent[1]["content"].rindex("}") + 1]
    assert json.loads(forwarded_json) == REPORT  # the data is equal, only whitespace went


async def test_off_sends_the_messages_unchanged(deja: Deja, upstream: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": WASTEFUL, "name": "alice"}]
    headers = await post(deja, messages, {"X-Deja-Compression": "off"})
    assert upstream.received[-1].body["messages"] == messages
    assert headers["X-Deja-Prompt-Tokens-Original"] == headers["X-Deja-Prompt-Tokens-Sent"]


async def test_bad_level_is_a_400(deja: Deja) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", json=body,
                                                    headers={"X-Deja-Compression": "extreme"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "X-Deja-Compression"


async def test_level_from_the_key(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, master_key="sk-m", cache={"enabled": False}))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-m"}) as s, s.post(
                server.url + "/admin/keys", json={"name": "raw", "metadata": {"compression": "off"}}) as r:
            secret = (await r.json())["key"]
        messages = [{"role": "user", "content": WASTEFUL}]
        headers = await post(server, messages, {"Authorization": f"Bearer {secret}"})
        assert upstream.received[-1].body["messages"] == messages
        assert headers["X-Deja-Prompt-Tokens-Original"] == headers["X-Deja-Prompt-Tokens-Sent"]
    finally:
        await server.close()


async def test_auto_selects_passages_lexically_without_an_embedding_model(deja: Deja, upstream: FakeOpenAI) -> None:
    # the cache (and so the embedding model) is off in this app: `auto` ranks passages by BM25
    filler = " ".join(["Quarterly figures were reviewed by the finance committee and filed."] * 12)
    docs = [f"Report {i}: {filler}" for i in range(40)]
    docs[23] = "Report 23: The Zorblat plant in Quuxville closed on 4 March after the flood. " + filler
    question = "Question: when did the Zorblat plant close?"
    content = "\n\n".join(["Answer from the reports below.", *docs, question])
    headers = await post(deja, [{"role": "user", "content": content}], {"X-Deja-Compression": "auto"})
    sent = upstream.received[-1].body["messages"][0]["content"]
    assert int(headers["X-Deja-Prompt-Tokens-Sent"]) * 3 < int(headers["X-Deja-Prompt-Tokens-Original"])
    assert docs[23] in sent and sent.startswith("Answer from the reports below.") and sent.endswith(question)
