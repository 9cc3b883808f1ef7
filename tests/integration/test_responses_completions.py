"""``POST /v1/responses`` and ``POST /v1/completions`` through the real app, with the official ``openai`` SDK
(``responses.create``, ``completions.create``, streamed and not) against the real fake OpenAI upstream and the
offline ``sim`` model: routing, the event stream, the exact and semantic cache, compression, keys and limits,
usage rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import STORAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, make_settings, start_deja
from tests.integration.router.storage.helpers import wait_for

MASTER = "sk-master-apis"
EVENTS = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
          "response.output_text.delta", "response.output_text.done", "response.content_part.done",
          "response.output_item.done", "response.completed"]


def models(upstream: FakeOpenAI) -> list[dict[str, Any]]:
    key = {"api_base": upstream.base_url, "api_key": "sk-fake"}
    return [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", **key}},
            {"model_name": "instruct", "litellm_params": {"model": "text-completion-openai/gpt-3.5-turbo-instruct",
                                                          **key}},
            {"model_name": "sim", "litellm_params": {"model": "sim/sim", "sim_delay_ms": 0,
                                                     "sim_word_delay_ms": 0}}]


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    config = {"model_list": models(upstream), "router_settings": {"num_retries": 0}}
    server = await start_deja(make_settings(tmp_path, config=config, master_key=MASTER, cache={"semantic": False}))
    yield server
    await server.close()


@pytest.fixture
def client(deja: Deja) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=deja.base_url, api_key=MASTER, max_retries=0)


def kinds(events: list[Any]) -> list[str]:
    """Event types, with runs of text deltas folded into one."""
    out: list[str] = []
    for event in events:
        if not (out and event.type == out[-1] == "response.output_text.delta"):
            out.append(event.type)
    return out


async def rows(server: Deja, expected: int) -> list[dict[str, Any]]:
    storage = server.app[STORAGE]

    async def enough() -> bool:
        found, _ = await storage.list_requests(UsageFilter(), limit=100)
        return len(found) >= expected

    await wait_for(enough, timeout=20)
    found, _ = await storage.list_requests(UsageFilter(), limit=100)
    return found


async def test_responses_json_then_exact_hit(client: openai.AsyncOpenAI, deja: Deja, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}))
    raw = await client.responses.with_raw_response.create(model="gpt-4o-mini", input="What is deja vu?",
                                                          instructions="Answer briefly.", temperature=0.2)
    first = raw.parse()
    assert raw.headers["X-Deja-Cache"] == "miss"
    assert first.output_text == "Answer to: What is deja vu?" and first.status == "completed"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (12, 5)
    sent = upstream.received[-1]
    assert sent.path == "/v1/responses"
    assert sent.body["input"] == "What is deja vu?" and sent.body["instructions"] == "Answer briefly."
    await deja.settled()
    raw = await client.responses.with_raw_response.create(model="gpt-4o-mini", input="What is deja vu?",
                                                          instructions="Answer briefly.", temperature=0.2)
    assert raw.headers["X-Deja-Cache"] == "hit-exact"
    assert raw.parse().id == first.id and raw.parse().output_text == first.output_text  # the stored response
    other = await client.responses.with_raw_response.create(model="gpt-4o-mini", input="What is deja vu?",
                                                            instructions="Answer at length.", temperature=0.2)
    assert other.headers["X-Deja-Cache"] == "miss"  # instructions are part of the scope
    assert len(upstream.received) == 2
    found = {(r["cache"], r["route"]): r for r in await rows(deja, 3)}
    miss = found[("miss", "responses")]
    assert (miss["prompt_tokens_sent"], miss["completion_tokens"], miss["status"]) == (12, 5, 200)
    assert miss["cost_usd"] > 0 and found[("exact", "responses")]["cost_usd"] == 0


async def test_responses_stream_is_openais_event_stream_and_replays(client: openai.AsyncOpenAI, deja: Deja,
                                                                    upstream: FakeOpenAI) -> None:
    stream = await client.responses.create(model="gpt-4o-mini", input="Count to four", stream=True)
    events = [e async for e in stream]
    assert kinds(events) == EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Answer to: Count to four" == events[-1].response.output_text
    await deja.settled()
    async with aiohttp.ClientSession() as session, session.post(
            deja.base_url + "/responses", headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "gpt-4o-mini", "input": "Count to four", "stream": True}) as r:
        assert r.headers["X-Deja-Cache"] == "hit-exact"
        raw = (await r.read()).decode()
    assert raw.startswith("event: response.created\ndata: ") and "[DONE]" not in raw
    replayed = [e async for e in await client.responses.create(model="gpt-4o-mini", input="Count to four",
                                                               stream=True)]
    assert kinds(replayed) == EVENTS
    assert "".join(e.delta for e in replayed if e.type == "response.output_text.delta") == text
    assert len(upstream.received) == 1


async def test_responses_on_sim_json_and_stream(client: openai.AsyncOpenAI) -> None:
    answer = await client.responses.create(model="sim", input="Hello offline", extra_headers={
        "Cache-Control": "no-store"})
    assert answer.output_text.startswith("[sim ") and answer.output_text.endswith("you asked: Hello offline")
    assert answer.usage is not None and answer.usage.output_tokens > 0
    events = [e async for e in await client.responses.create(model="sim", input="Hello offline", stream=True,
                                                             extra_headers={"Cache-Control": "no-store"})]
    assert kinds(events) == EVENTS
    assert events[-1].response.output_text == answer.output_text
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="sim", input=[{"type": "function_call_output", "call_id": "c",
                                                           "output": "1"}])


async def test_responses_compression_and_bad_input(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    raw = await client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Summarise   this:\n\n\n\n{\"a\":   1,   \"b\":  [1,  2]}",
        extra_headers={"Cache-Control": "no-store"})
    assert upstream.received[-1].body["input"] == "Summarise this:\n\n{\"a\":1,\"b\":[1,2]}"
    assert int(raw.headers["X-Deja-Prompt-Tokens-Sent"]) < int(raw.headers["X-Deja-Prompt-Tokens-Original"])
    for body in ({"model": "gpt-4o-mini"}, {"model": "gpt-4o-mini", "input": ""},
                 {"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 0}):
        with pytest.raises(openai.BadRequestError):
            await client.post("/responses", body=body, cast_to=object)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="x")


async def test_completions_json_stream_and_hits(client: openai.AsyncOpenAI, deja: Deja,
                                                upstream: FakeOpenAI) -> None:
    raw = await client.completions.with_raw_response.create(model="instruct", prompt="Once upon a time",
                                                            max_tokens=20)
    first = raw.parse()
    assert raw.headers["X-Deja-Cache"] == "miss" and upstream.received[-1].path == "/v1/completions"
    assert first.object == "text_completion" and first.choices[0].text == " Answer to: Once upon a time"
    assert first.choices[0].finish_reason == "stop" and first.usage is not None
    await deja.settled()
    hit = await client.completions.with_raw_response.create(model="instruct", prompt="Once upon a time",
                                                            max_tokens=20)
    assert hit.headers["X-Deja-Cache"] == "hit-exact" and hit.parse().choices[0].text == first.choices[0].text
    assert hit.parse().id != first.id
    chunks = [c async for c in await client.completions.create(
        model="instruct", prompt="Once upon a time", max_tokens=20, stream=True,
        stream_options={"include_usage": True})]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == first.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len(upstream.received) == 1  # the stream was a replayed hit
    fresh = [c async for c in await client.completions.create(model="instruct", prompt="A fresh start",
                                                              stream=True)]
    assert "".join(c.choices[0].text for c in fresh if c.choices) == " Answer to: A fresh start"
    assert all(c.usage is None for c in fresh)  # the usage deja asked for is not shown to a client that did not
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    found = [r for r in await rows(deja, 4) if r["route"] == "completions"]
    assert sorted(r["cache"] for r in found) == ["exact", "exact", "miss", "miss"]
    assert all(r["completion_tokens"] > 0 for r in found)


async def test_completions_on_sim_and_an_openai_chat_model(client: openai.AsyncOpenAI,
                                                           upstream: FakeOpenAI) -> None:
    answer = await client.completions.create(model="sim", prompt="Hello offline")
    assert answer.choices[0].text.endswith("you asked: Hello offline")
    chunks = [c async for c in await client.completions.create(model="sim", prompt="Hello stream", stream=True)]
    assert "".join(c.choices[0].text for c in chunks if c.choices).endswith("you asked: Hello stream")
    await client.completions.create(model="gpt-4o-mini", prompt="Say hi")
    assert upstream.received[-1].path == "/v1/chat/completions"  # LiteLLM sends a chat model's prompt as chat
    with pytest.raises(openai.BadRequestError):
        await client.post("/completions", body={"model": "sim", "prompt": {"not": "a prompt"}}, cast_to=object)


async def test_keys_and_limits_apply(client: openai.AsyncOpenAI, deja: Deja) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {MASTER}"}) as session, session.post(
            deja.url + "/admin/keys", json={"name": "k", "allowed_models": ["sim"], "rpm": 1}) as r:
        secret = (await r.json())["key"]
    keyed = openai.AsyncOpenAI(base_url=deja.base_url, api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        await keyed.responses.create(model="gpt-4o-mini", input="x")
    await keyed.completions.create(model="sim", prompt="one")
    with pytest.raises(openai.RateLimitError):
        await keyed.responses.create(model="sim", input="two")
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=deja.base_url, api_key="sk-wrong", max_retries=0).completions.create(
            model="sim", prompt="x")


@pytest.mark.slow
async def test_semantic_tier_for_plain_text_input(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, config={"model_list": models(upstream),
                                                              "router_settings": {"num_retries": 0}}))
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        await client.responses.create(model="gpt-4o-mini", input="How do I reverse a list in Python?")
        await server.settled()
        raw = await client.responses.with_raw_response.create(model="gpt-4o-mini",
                                                              input="How can I reverse a Python list?")
        assert raw.headers["X-Deja-Cache"] == "hit-semantic"
        assert raw.parse().output_text == "Answer to: How do I reverse a list in Python?"
        chat = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "How do I reverse a list in Python?"}])
        assert chat.headers["X-Deja-Cache"] == "miss"  # never a Responses answer for a chat request
        await client.completions.create(model="instruct", prompt="How do I boil an egg?")
        await server.settled()
        text = await client.completions.with_raw_response.create(model="instruct", prompt="How do I boil an egg")
        assert text.headers["X-Deja-Cache"] == "hit-semantic"
        assert text.parse().choices[0].text == " Answer to: How do I boil an egg?"
    finally:
        await server.close()


async def test_a_stream_cut_upstream_ends_in_band_and_is_not_stored(client: openai.AsyncOpenAI, deja: Deja,
                                                                    upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(kind="cut", cut_after=2))
    async with aiohttp.ClientSession() as session, session.post(
            deja.base_url + "/responses", headers={"Authorization": f"Bearer {MASTER}"},
            json={"model": "gpt-4o-mini", "input": "cut me", "stream": True}) as r:
        raw = (await r.read()).decode()
    assert "event: response.created" in raw and "event: response.completed" not in raw
    assert raw.rstrip().splitlines()[-2] == "event: error"
    await deja.settled()
    again = await client.responses.with_raw_response.create(model="gpt-4o-mini", input="cut me")
    assert again.headers["X-Deja-Cache"] == "miss"  # the cut answer was not stored
    found = [r for r in await rows(deja, 2) if r["route"] == "responses"]
    assert sorted(r["status"] for r in found) == [200, 502]


async def test_metrics_count_both_routes(client: openai.AsyncOpenAI, deja: Deja) -> None:
    await client.responses.create(model="sim", input="metered")
    await client.completions.create(model="sim", prompt="metered")
    async with aiohttp.ClientSession() as session, session.get(deja.url + "/metrics") as r:
        text = await r.text()
    for route in ("responses", "completions"):
        assert f'deja_requests_total{{model="sim",route="{route}",status="200"}} 1.0' in text
        assert f'deja_request_duration_seconds_count{{cache="miss",model="sim",route="{route}"}} 1.0' in text


@pytest.mark.parametrize(("path", "body"), [
    ("/responses", {"model": "gpt-4o-mini", "input": "long"}),
    ("/completions", {"model": "instruct", "prompt": "long"}),
])
async def test_client_disconnect_cancels_upstream(deja: Deja, upstream: FakeOpenAI, path: str,
                                                  body: dict[str, Any]) -> None:
    upstream.script(Behaviour(content=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.05))
    async with aiohttp.ClientSession() as s:
        response = await s.post(deja.base_url + path, json={**body, "stream": True},
                                headers={"Authorization": f"Bearer {MASTER}", "Cache-Control": "no-store"})
        await response.content.readline()  # the first event arrived: the stream is live
        response.close()  # the client goes away mid-stream
    assert await upstream.wait_client_gone(timeout=5.0)
    assert upstream.completed_streams == 0
    found = await rows(deja, 1)
    assert found[0]["status"] == 499 and found[0]["route"] == path.strip("/")
