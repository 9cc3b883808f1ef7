"""The semantic cache through the HTTP API, with the SDK as client, in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from tests.integration.harness import Deja, RedisServer, make_settings, start_deja

pytestmark = pytest.mark.slow
MASTER = "sk-master-test"


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream))
    yield server
    await server.close()


def sdk(server: Deja, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_exact_hit_json_and_stream(deja: Deja, upstream: FakeOpenAI) -> None:
    client = sdk(deja)
    first = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                   messages=ask("How do I boil an egg?"))
    assert first.headers["X-Deja-Cache"] == "miss"
    await deja.settled()
    # extra spaces are normalised away by lossless compression: still an exact hit
    second = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                    messages=ask("How  do I boil an egg?  "))
    assert second.headers["X-Deja-Cache"] == "hit-exact"
    assert int(second.headers["Age"]) >= 0
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().id != first.parse().id
    assert len(upstream.received) == 1
    stream = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ask("How do I boil an egg?"), stream=True,
        stream_options={"include_usage": True})
    assert stream.headers["X-Deja-Cache"] == "hit-exact"
    chunks = [c async for c in stream.parse()]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.parse().choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == first.parse().usage.total_tokens
    assert len(upstream.received) == 1


async def test_semantic_hit_on_paraphrase(deja: Deja, upstream: FakeOpenAI) -> None:
    client = sdk(deja)
    await client.chat.completions.create(model="gpt-4o-mini", messages=ask("How do I reverse a list in Python?"))
    await deja.settled()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ask("How can I reverse a Python list?"), stream=True)
    assert raw.headers["X-Deja-Cache"] == "hit-semantic"
    assert 0 < float(raw.headers["X-Deja-Cache-Similarity"]) <= 1
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "Answer to: How do I reverse a list in Python?"
    assert len(upstream.received) == 1


async def test_configured_threshold_applies_and_the_header_overrides_it(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, cache={"threshold": 0.999}))
    try:
        client = sdk(server)
        await client.chat.completions.create(model="gpt-4o-mini", messages=ask("How do I reverse a list in Python?"))
        await server.settled()
        paraphrase = ask("How can I reverse a Python list?")  # a semantic hit at the default floor (test above)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=paraphrase, extra_headers={"X-Deja-Cache-Threshold": "0.95"})
        assert raw.headers["X-Deja-Cache"] == "hit-semantic"  # the header wins over cache.threshold
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=paraphrase)
        assert raw.headers["X-Deja-Cache"] == "miss"  # its similarity is below cache.threshold
        assert len(upstream.received) == 2
    finally:
        await server.close()


async def test_hard_negative_is_not_served(deja: Deja, upstream: FakeOpenAI) -> None:
    client = sdk(deja)
    await client.chat.completions.create(model="gpt-4o-mini",
                                         messages=ask("What is the syllabus for GATE 2017?"))
    await deja.settled()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ask("What is the syllabus for GATE 2018?"))
    assert raw.headers["X-Deja-Cache"] == "miss"
    assert raw.parse().choices[0].message.content == "Answer to: What is the syllabus for GATE 2018?"


async def test_controls_no_cache_no_store_threshold(deja: Deja, upstream: FakeOpenAI) -> None:
    client = sdk(deja)
    msgs = ask("Name a prime number")
    r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs,
                                                               extra_headers={"Cache-Control": "no-store"})
    assert r.headers["X-Deja-Cache"] == "bypass"
    r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs,
                                                               extra_headers={"Cache-Control": "no-cache"})
    assert r.headers["X-Deja-Cache"] == "bypass"
    await deja.settled()
    r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    assert r.headers["X-Deja-Cache"] == "hit-exact"  # no-cache stored it
    assert len(upstream.received) == 2
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=msgs,
                                             extra_headers={"X-Deja-Cache-Threshold": "high"})


async def test_namespace_and_model_separate(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = {"model_list": [
        {"model_name": m, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.base_url,
                                             "api_key": "x"}} for m in ("model-a", "model-b")]}
    server = await start_deja(make_settings(tmp_path, config=config))
    try:
        client = sdk(server)
        await client.chat.completions.create(model="model-a", messages=ask("same words"),
                                             extra_headers={"X-Deja-Cache-Namespace": "team-1"})
        await server.settled()
        for model, ns in (("model-b", "team-1"), ("model-a", "team-2"), ("model-a", "")):
            r = await client.chat.completions.with_raw_response.create(
                model=model, messages=ask("same words"), extra_headers={"X-Deja-Cache-Namespace": ns})
            assert r.headers["X-Deja-Cache"] == "miss", (model, ns)
    finally:
        await server.close()


async def test_errors_and_cut_streams_are_not_stored(deja: Deja, upstream: FakeOpenAI) -> None:
    client = sdk(deja)
    upstream.script(Behaviour(kind="error", status=500))
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=ask("flaky question"))
    upstream.script(Behaviour(kind="cut", content="a b c d e f", cut_after=2))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": ask("cut question")}
    async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", json=body) as r:
        await r.read()
    upstream.script(Behaviour(content="partial answer", finish_reason="content_filter"))
    await client.chat.completions.create(model="gpt-4o-mini", messages=ask("filtered question"))
    await deja.settled()
    for question in ("flaky question", "cut question", "filtered question"):
        r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask(question))
        assert r.headers["X-Deja-Cache"] == "miss", question


async def test_tenants_never_share(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER))
    try:
        keys = {}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {MASTER}"}) as s:
            for tenant in ("acme", "globex"):
                async with s.post(server.url + "/admin/keys", json={"name": tenant, "tenant": tenant}) as r:
                    assert r.status == 201
                    keys[tenant] = (await r.json())["key"]
        a, b = sdk(server, keys["acme"]), sdk(server, keys["globex"])
        upstream.script(Behaviour(content="acme's confidential answer"))
        await a.chat.completions.create(model="gpt-4o-mini", messages=ask("What is our revenue?"))
        await server.settled()
        r = await b.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                              messages=ask("What is our revenue?"))
        assert r.headers["X-Deja-Cache"] == "miss"
        assert r.parse().choices[0].message.content != "acme's confidential answer"
        r = await a.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                              messages=ask("What is our revenue?"))
        assert r.headers["X-Deja-Cache"] == "hit-exact"
    finally:
        await server.close()


async def test_two_instances_share_redis(tmp_path: Path, upstream: FakeOpenAI, redis_url: str,
                                         redis_prefix: str) -> None:
    settings = make_settings(tmp_path, upstream, redis_url=redis_url, redis_prefix=redis_prefix)
    one, two = await start_deja(settings), await start_deja(settings)
    try:
        await sdk(one).chat.completions.create(model="gpt-4o-mini", messages=ask("Where is Timbuktu?"))
        deadline = time.monotonic() + 3
        header = None
        while time.monotonic() < deadline:
            r = await sdk(two).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=ask("Where is Timbuktu?"))
            header = r.headers["X-Deja-Cache"]
            if header == "hit-exact":
                break
            await asyncio.sleep(0.1)
        assert header == "hit-exact"
    finally:
        await one.close()
        await two.close()


async def test_redis_outage_never_fails_a_request(tmp_path: Path, upstream: FakeOpenAI,
                                                  redis_server: RedisServer) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, redis_url=redis_server.url))
    try:
        client = sdk(server)
        statuses = []
        for i in range(4):
            r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                       messages=ask(f"question {i}"))
            statuses.append(r.headers["X-Deja-Cache"])
        redis_server.kill()
        async with aiohttp.ClientSession() as s, s.get(server.url + "/health/ready") as r:
            assert r.status == 503 and (await r.json())["checks"]["redis"] is False
        for i in range(4):  # Redis is gone: answered anyway, cache bypassed
            r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                       messages=ask(f"outage {i}"))
            assert r.parse().choices[0].message.content == f"Answer to: outage {i}"
            assert r.headers["X-Deja-Cache"] == "bypass"
        redis_server.start()
        deadline = time.monotonic() + 10
        header = None
        while time.monotonic() < deadline and header != "hit-exact":
            r = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                                       messages=ask("after restart"))
            header = r.headers["X-Deja-Cache"]
            await asyncio.sleep(0.2)
        assert header == "hit-exact"  # the cache came back by itself
        async with aiohttp.ClientSession() as s, s.get(server.url + "/health/ready") as r:
            assert r.status == 200
    finally:
        await server.close()


async def test_admin_cache_stats_and_clear(tmp_path: Path, upstream: FakeOpenAI) -> None:
    server = await start_deja(make_settings(tmp_path, upstream, master_key=MASTER))
    try:
        client = sdk(server, MASTER)
        for ns in ("alpha", "beta"):
            await client.chat.completions.create(model="gpt-4o-mini", messages=ask("What is a monad?"),
                                                 extra_headers={"X-Deja-Cache-Namespace": ns})
        await server.settled()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {MASTER}"}) as s:
            async with s.get(server.url + "/admin/cache/stats") as r:
                assert (await r.json())["entries"] == 2
            async with s.delete(server.url + "/admin/cache?namespace=alpha") as r:
                assert (await r.json())["deleted"] == 1
            async with s.get(server.url + "/admin/cache/stats") as r:
                assert (await r.json())["entries"] == 1
            async with s.delete(server.url + "/admin/cache") as r:
                assert (await r.json())["deleted"] == 1
        r = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=ask("What is a monad?"), extra_headers={"X-Deja-Cache-Namespace": "beta"})
        assert r.headers["X-Deja-Cache"] == "miss"
    finally:
        await server.close()
