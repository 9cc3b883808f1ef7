"""The request's headers (trace context, request id) reach the deployment on both paths — deja's direct
OpenAI path and LiteLLM's — alongside the deployment's own ``extra_headers``, for chat, streams and
embeddings; the offline ``sim`` model takes them too. A real Gateway in front of the real fake upstream."""

from __future__ import annotations

import pytest

from providers.fake_openai import FakeOpenAI
from providers.gateway import Gateway, Served

TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1",
         "X-Request-Id": "req_trace_1"}


@pytest.mark.parametrize("direct", [True, False])
async def test_headers_reach_the_upstream(upstream: FakeOpenAI, direct: bool) -> None:
    models = [{"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.base_url,
                                                     "api_key": "sk-fake", "extra_headers": {"X-Team": "blue"}}},
              {"model_name": "e", "litellm_params": {"model": "openai/text-embedding-3-small",
                                                     "api_base": upstream.base_url, "api_key": "sk-fake"}}]
    gateway = Gateway(models, router_settings={"num_retries": 0}, direct_openai=direct)
    try:
        assert gateway.router.is_direct("m") is direct
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        await gateway.complete(chat, TRACE)
        chunks = [c async for c in gateway.stream({**chat, "stream": True}, Served(), TRACE)]
        assert chunks
        await gateway.embed({"model": "e", "input": "hello"}, TRACE)
        await gateway.complete(chat)  # without headers: nothing of a previous request's
    finally:
        await gateway.close()
    received = [{k.lower(): v for k, v in r.headers.items()} for r in upstream.received]
    assert len(received) == 4
    for headers in received[:3]:
        assert {k.lower(): v for k, v in TRACE.items()}.items() <= headers.items()
    assert received[0]["x-team"] == received[1]["x-team"] == "blue"
    assert "traceparent" not in received[3] and received[3]["x-team"] == "blue"
    assert all("deja_headers" not in str(r.body) for r in upstream.received)


async def test_sim_takes_headers() -> None:
    gateway = Gateway([], sim_delay_ms=0, sim_word_delay_ms=0)
    try:
        data, _ = await gateway.complete({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}, TRACE)
        assert data["choices"][0]["message"]["content"]
    finally:
        await gateway.close()
