"""The proxy core against the running app, with the official ``openai`` SDK as the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from providers.fake_openai import Behaviour, FakeOpenAI
from router.appkeys import PROVIDER
from tests.integration.harness import Deja, make_settings, start_deja

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
CALL = {"id": "call_abc123", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
NO_CACHE = {"Cache-Control": "no-store"}


@pytest.fixture(params=[True, False], ids=["direct", "litellm"])
def direct(request: pytest.FixtureRequest) -> bool:
    """Every test runs on both call paths: deja's direct OpenAI path and LiteLLM's own ``acompletion``."""
    return bool(request.param)


@pytest.fixture
async def deja(tmp_path: Path, upstream: FakeOpenAI, direct: bool) -> AsyncIterator[Deja]:
    server = await start_deja(make_settings(tmp_path, upstream, cache={"semantic": False},
                                            max_body_bytes=64 * 1024, direct_openai=direct))
    assert server.app[PROVIDER].router.is_direct("gpt-4o-mini") is direct
    yield server
    await server.close()


@pytest.fixture
def client(deja: Deja) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=deja.base_url, api_key="unused", max_retries=0)


async def test_non_streaming_chat_equals_upstream(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(content="Bonjour tout le monde",
                              usage={"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}))
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello in French"}],
        seed=7, user="end-user-1", logprobs=False, extra_headers=NO_CACHE)
    result = raw.parse()
    assert result.choices[0].message.content == "Bonjour tout le monde"
    assert result.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (11, 4, 15)
    assert raw.headers["X-Deja-Request-Id"]
    sent = upstream.received[-1].body
    assert sent["seed"] == 7 and sent["user"] == "end-user-1" and sent["logprobs"] is False


async def test_every_field_passes_through(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Give JSON"}], n=1, stop=["\n\n"],
        response_format={"type": "json_object"}, presence_penalty=0.5, logit_bias={"50256": -100},
        top_p=0.9, extra_body={"custom_vendor_field": {"x": 1}}, extra_headers=NO_CACHE)
    sent = upstream.received[-1].body
    assert sent["stop"] == ["\n\n"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["presence_penalty"] == 0.5 and sent["top_p"] == 0.9
    assert sent["logit_bias"] == {"50256": -100}
    assert sent["custom_vendor_field"] == {"x": 1}


async def test_streaming_chat_equals_upstream(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(content="one two three four",
                              usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True}, extra_headers=NO_CACHE)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 4)


async def test_stream_without_include_usage_has_no_usage_chunk(deja: Deja, upstream: FakeOpenAI) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", json=body,
                                                    headers=NO_CACHE) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["X-Deja-Request-Id"]
        raw = (await r.read()).decode()
    events = [line.removeprefix("data: ") for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in p for p in payloads)
    # deja asked the upstream for usage anyway, to account for it
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}


async def test_tool_calls_non_streaming(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(tool_calls=[CALL]))
    result = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
        tool_choice="auto", extra_headers=NO_CACHE)
    call = result.choices[0].message.tool_calls[0]
    assert result.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_abc123", "get_weather", {"city": "Paris"})
    assert upstream.received[-1].body["tools"] == TOOLS
    assert upstream.received[-1].body["tool_choice"] == "auto"


async def test_tool_calls_streaming(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(tool_calls=[CALL]))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True,
        extra_headers=NO_CACHE)
    name, args, ids, finish = "", "", set(), None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                ids.add(call.id) if call.id else None
                name += call.function.name or "" if call.function else ""
                args += call.function.arguments or "" if call.function else ""
            finish = choice.finish_reason or finish
    assert (ids, name, json.loads(args), finish) == ({"call_abc123"}, "get_weather", {"city": "Paris"},
                                                     "tool_calls")


async def test_embeddings(client: openai.AsyncOpenAI, upstream: FakeOpenAI) -> None:
    result = await client.embeddings.create(model="gpt-4o-mini", input=["alpha", "beta"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8 and result.data[0].embedding != result.data[1].embedding
    assert upstream.received[-1].path == "/v1/embeddings"
    assert upstream.received[-1].body["input"] == ["alpha", "beta"]


async def test_models(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini"]
    assert (await client.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


async def test_error_shapes(client: openai.AsyncOpenAI, deja: Deja, upstream: FakeOpenAI) -> None:
    async def post(data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
        async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", data=data,
                                                        headers=headers or {}) as r:
            return r.status, await r.json(), dict(r.headers)

    def shape(body: dict) -> None:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in body["error"]["message"]

    status, body, headers = await post(b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json" and headers["X-Deja-Request-Id"]
    shape(body)
    status, body, _ = await post(json.dumps({"model": "gpt-4o-mini", "messages": []}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    shape(body)
    status, body, _ = await post(json.dumps({"model": "gpt-4o-mini",
                                             "messages": [{"role": "wizard", "content": "x"}]}).encode())
    assert status == 400
    shape(body)
    status, body, _ = await post(json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
                                 .encode())
    assert status == 404 and body["error"]["code"] == "model_not_found"
    shape(body)
    big = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 70_000}]}).encode()
    status, body, _ = await post(big)
    assert status == 413
    shape(body)
    msgs = [{"role": "user", "content": "q"}]
    upstream.script(Behaviour(kind="error", status=429, headers={"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as rate:
        await client.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers=NO_CACHE)
    assert rate.value.response.headers["Retry-After"] == "7"
    shape(rate.value.response.json())
    upstream.script(Behaviour(kind="error", status=500))
    with pytest.raises(openai.APIStatusError) as failure:
        await client.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers=NO_CACHE)
    assert failure.value.status_code == 502
    shape(failure.value.response.json())
    status, body, _ = await post(b"{}", {"Content-Type": "application/json"})
    assert status == 400
    shape(body)


async def test_upstream_timeout_is_504(tmp_path: Path, direct: bool) -> None:
    async with FakeOpenAI(default=Behaviour(kind="hang")) as up:
        settings = make_settings(tmp_path, up, config={"router_settings": {"num_retries": 0, "timeout": 0.5}},
                                 cache={"enabled": False}, direct_openai=direct)
        server = await start_deja(settings)
        try:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            with pytest.raises(openai.APIStatusError) as failure:
                await client.chat.completions.create(model="gpt-4o-mini",
                                                     messages=[{"role": "user", "content": "q"}])
            assert failure.value.status_code == 504
            assert failure.value.response.json()["error"]["type"] == "timeout"
        finally:
            await server.close()


async def test_fallback_to_second_deployment(tmp_path: Path, direct: bool) -> None:
    async with FakeOpenAI(default=Behaviour(kind="error", status=500)) as bad, FakeOpenAI() as good:
        settings = make_settings(tmp_path, bad, good, config={"router_settings": {
            "num_retries": 1, "retry_after": 0, "routing_strategy": "simple-shuffle", "enable_pre_call_checks":
            False}}, cache={"enabled": False}, direct_openai=direct)
        server = await start_deja(settings)
        try:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            result = await client.chat.completions.create(model="gpt-4o-mini",
                                                          messages=[{"role": "user", "content": "ping"}])
            assert result.choices[0].message.content == "Answer to: ping"
            assert len(bad.received) >= 1 and len(good.received) == 1
        finally:
            await server.close()


async def test_client_disconnect_cancels_upstream(deja: Deja, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(content=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.05))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    async with aiohttp.ClientSession() as s:
        response = await s.post(deja.base_url + "/chat/completions", json=body, headers=NO_CACHE)
        await response.content.readline()  # the first event arrived: the stream is live
        response.close()  # the client goes away mid-stream
    assert await upstream.wait_client_gone(timeout=5.0)
    assert upstream.completed_streams == 0


async def test_client_disconnect_while_upstream_silent(deja: Deja, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(kind="hang"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow"}]}
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(s.post(deja.base_url + "/chat/completions", json=body, headers=NO_CACHE))
        deadline = asyncio.get_running_loop().time() + 5
        while not upstream.received and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
    assert await upstream.wait_client_gone(timeout=5.0)


async def test_upstream_cut_midstream_gives_in_band_error(deja: Deja, upstream: FakeOpenAI) -> None:
    upstream.script(Behaviour(kind="cut", content="a b c d e f g", cut_after=2))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "cut"}]}
    async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", json=body,
                                                    headers=NO_CACHE) as r:
        assert r.status == 200
        raw = (await r.read()).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "error" in json.loads(events[-2])
    assert set(json.loads(events[-2])["error"]) == {"message", "type", "param", "code"}


async def test_keepalive_comments_while_upstream_silent(tmp_path: Path, direct: bool) -> None:
    async with FakeOpenAI(default=Behaviour(delay=0.6, content="late")) as up:
        server = await start_deja(make_settings(tmp_path, up, keepalive_seconds=0.2, cache={"enabled": False},
                                                direct_openai=direct))
        try:
            body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            async with aiohttp.ClientSession() as s, s.post(server.base_url + "/chat/completions", json=body) as r:
                raw = (await r.read()).decode()
            assert raw.startswith(": keep-alive\n\n")
            assert raw.rstrip().endswith("data: [DONE]")
        finally:
            await server.close()


async def test_no_keepalive_while_chunks_flow(tmp_path: Path, direct: bool) -> None:
    """The heartbeat counts from the last write: a stream whose chunks come faster than the interval gets none."""
    words = " ".join(f"w{i}" for i in range(16))
    async with FakeOpenAI(default=Behaviour(content=words, chunk_delay=0.1)) as up:
        server = await start_deja(make_settings(tmp_path, up, keepalive_seconds=0.5, cache={"enabled": False},
                                                direct_openai=direct))
        try:
            body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "x"}]}
            async with aiohttp.ClientSession() as s, s.post(server.base_url + "/chat/completions", json=body) as r:
                raw = (await r.read()).decode()
            assert raw.count("data: ") >= 16 and raw.rstrip().endswith("data: [DONE]")
            assert ": keep-alive" not in raw.split("data: ", 1)[1]  # none once chunks flow
        finally:
            await server.close()


async def test_request_id_is_kept(deja: Deja) -> None:
    async with aiohttp.ClientSession() as s, s.get(deja.base_url + "/models",
                                                   headers={"X-Request-Id": "my-trace-42"}) as r:
        assert r.headers["X-Deja-Request-Id"].startswith("my-trace-42.")  # unique per request: one row each
        assert r.headers["X-Request-Id"] == r.headers["X-Deja-Request-Id"]


async def test_health(deja: Deja, upstream: FakeOpenAI) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(deja.url + "/health/live") as r:
            assert r.status == 200
        async with s.get(deja.url + "/health/ready") as r:
            body = await r.json()
            assert r.status == 200 and body["checks"]["database"] is True
        await upstream.close()  # the configured upstream stops answering
        async with s.get(deja.url + "/health/ready") as r:
            assert r.status == 503


async def _start_bad_then_good(tmp_path: Path, bad: FakeOpenAI, good: FakeOpenAI, direct: bool) -> Deja:
    """deja with one group of two deployments, ``bad`` first; one retry; one failure cools a deployment down."""
    return await start_deja(make_settings(tmp_path, bad, good, config={"router_settings": {
        "num_retries": 1, "retry_after": 0, "allowed_fails": 0, "cooldown_time": 60}},
        cache={"enabled": False}, direct_openai=direct))


async def test_failing_deployment_is_cooled_down(tmp_path: Path, direct: bool) -> None:
    """After a failure the Router cools the deployment down: the next request goes straight to the healthy one."""
    async with FakeOpenAI(default=Behaviour(kind="error", status=500)) as bad, FakeOpenAI() as good:
        server = await _start_bad_then_good(tmp_path, bad, good, direct)
        try:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            for text in ("one", "two", "three"):
                result = await client.chat.completions.create(model="gpt-4o-mini",
                                                              messages=[{"role": "user", "content": text}])
                assert result.choices[0].message.content == f"Answer to: {text}"
            assert len(bad.received) == 1 and len(good.received) == 3
        finally:
            await server.close()


async def test_clients_cannot_steer_litellm_or_the_router(client: openai.AsyncOpenAI, upstream: FakeOpenAI,
                                                          direct: bool) -> None:
    """Credentials, api_base, mock answers, retries and timeouts are the operator's: sent in a body they are
    dropped, never applied and never forwarded. OpenAI's own ``metadata`` is not touched by the Router's."""
    result = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "who answers?"}], metadata={"team": "a"},
        extra_body={"api_base": "http://127.0.0.1:9/v1", "api_key": "stolen?", "mock_response": "mocked",
                    "num_retries": 7, "timeout": 0.001, "fallbacks": ["x"], "aws_secret_access_key": "k",
                    "custom_vendor_field": 1},
        extra_headers=NO_CACHE)
    assert result.choices[0].message.content == "Answer to: who answers?"  # the configured upstream, not a mock
    sent = upstream.received[-1].body
    assert not {"api_base", "api_key", "mock_response", "num_retries", "timeout", "fallbacks",
                "aws_secret_access_key"} & set(sent)
    assert sent["custom_vendor_field"] == 1
    assert upstream.received[-1].headers.get("Authorization") == "Bearer sk-fake"
    if direct:  # LiteLLM's own call does not forward metadata; the direct path sends exactly the client's
        assert sent["metadata"] == {"team": "a"}


async def test_stream_failing_before_its_first_token_falls_back(tmp_path: Path, direct: bool) -> None:
    """A stream cut before any token is a failed call the Router can still retry elsewhere."""
    async with FakeOpenAI(default=Behaviour(kind="cut", cut_after=0)) as bad, FakeOpenAI() as good:
        server = await _start_bad_then_good(tmp_path, bad, good, direct)
        try:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                          messages=[{"role": "user", "content": "ping"}])
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Answer to: ping"
            assert len(bad.received) == 1 and len(good.received) == 1
        finally:
            await server.close()


async def test_numbers_json_does_not_have_are_refused_and_huge_integers_are_served(deja: Deja) -> None:
    """NaN, Infinity and overflowing numbers are not JSON: 400. An integer beyond 64 bits is JSON: answered."""
    async def post(data: bytes) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as s, s.post(deja.base_url + "/chat/completions", data=data,
                                                        headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json()

    for bad in (b"NaN", b"Infinity", b"1e400"):
        status, body = await post(b'{"model": "gpt-4o-mini", "temperature": ' + bad +
                                  b', "messages": [{"role": "user", "content": "x"}]}')
        assert status == 400 and body["error"]["code"] == "invalid_json", bad
    status, body = await post(b'{"model": "gpt-4o-mini", "seed": 100000000000000000000, '
                              b'"messages": [{"role": "user", "content": "big seed"}]}')
    assert status == 200 and body["choices"][0]["message"]["content"] == "Answer to: big seed"


async def test_reasoning_models_get_max_completion_tokens(tmp_path: Path, upstream: FakeOpenAI,
                                                          direct: bool) -> None:
    """OpenAI's o-series and gpt-5 refuse ``max_tokens``: it is sent as ``max_completion_tokens``, on both paths."""
    models = [{"model_name": "reasoner", "litellm_params": {"model": "openai/o3-mini", "api_base": upstream.base_url,
                                                            "api_key": "sk-fake"}}]
    server = await start_deja(make_settings(tmp_path, config={"model_list": models}, cache={"enabled": False},
                                            direct_openai=direct))
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        await client.chat.completions.create(model="reasoner", max_tokens=50,
                                             messages=[{"role": "user", "content": "think"}])
        sent = upstream.received[-1].body
        assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    finally:
        await server.close()


async def test_direct_streams_reuse_the_upstream_connection(tmp_path: Path) -> None:
    """A complete stream hands its connection back to the pool (no new TCP or TLS handshake per request), also
    when the end of the body comes after ``[DONE]`` (the fake pauses after every event, as a network does)."""
    upstream = FakeOpenAI(default=Behaviour(chunk_delay=0.05))
    await upstream.start()
    server = await start_deja(make_settings(tmp_path, upstream, cache={"enabled": False}))
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        for i in range(3):
            stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                          messages=[{"role": "user", "content": f"s{i}"}])
            assert [c async for c in stream]
            await server.settled()
        peers = {r.peer for r in upstream.received}
        assert len(upstream.received) == 3 and len(peers) == 1, peers
    finally:
        await server.close()
        await upstream.close()


@pytest.mark.parametrize("bypass", [False, True], ids=["via-proxy", "no-proxy"])
async def test_direct_path_honours_http_proxy_settings(tmp_path: Path, upstream: FakeOpenAI,
                                                       monkeypatch: pytest.MonkeyPatch, bypass: bool) -> None:
    """HTTP_PROXY / NO_PROXY apply to the direct path as they do to LiteLLM's own client."""
    async with FakeOpenAI() as forward_proxy:  # answers the proxied request itself: enough to see the route
        monkeypatch.setenv("HTTP_PROXY", forward_proxy.base_url.rsplit("/v1", 1)[0])
        monkeypatch.setenv("NO_PROXY", "127.0.0.1" if bypass else "")
        server = await start_deja(make_settings(tmp_path, upstream, cache={"enabled": False}))
        try:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "p"}])
            assert (len(upstream.received), len(forward_proxy.received)) == ((1, 0) if bypass else (0, 1))
        finally:
            await server.close()
