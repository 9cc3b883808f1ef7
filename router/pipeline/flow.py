"""The request flow of the APIs beside chat (``/v1/responses``, ``/v1/completions``), with the chat flow's steps.

parse → ``accept`` (authenticate, model, allowed models) → ``Api.prepare`` (compression where it applies) →
``admit`` → ``cache_step.look_up`` (on ``Api.cache_body``: the chat shape the cache keys read) → the hit, replayed
in the API's own shape, or the provider (JSON, or a stream folded by ``Api.fold``) → ``finish`` (usage row,
metrics, log line from the ``Outcome``). Each API says only what differs, in an ``Api``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from providers.errors import ProviderError
from providers.interface import Served
from router.appkeys import CONTEXT
from router.http import errors as err
from router.http.attribution import without_tags
from router.http.middleware import json_response
from router.http.parsing import read_json, validate
from router.http.sse import SSEWriter
from router.pipeline import cache_step
from router.pipeline.accounting import accounted, admit, spend_headers
from router.pipeline.body_cache import with_body_cache
from router.pipeline.cache_controls import cache_headers, parse_cache_controls
from router.pipeline.cache_debug import debug_headers
from router.pipeline.chat import accept, answer_headers
from router.pipeline.context import Context
from router.pipeline.steps import Call, Compressed, Delivery, Lookup, Meter


class Fold(Protocol):
    """Reads one stream: what to send of each item, and the whole answer it adds up to."""

    def feed(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """The item to send the client (None: nothing to send)."""
        ...

    def carries_text(self, item: dict[str, Any]) -> bool: ...

    def usage(self) -> tuple[int | None, int | None]:
        """(prompt, completion) tokens the upstream reported, when it did."""
        ...

    def text(self) -> str: ...

    def whole(self) -> dict[str, Any] | None:
        """The complete answer, or None when the stream did not finish (nothing is stored then)."""
        ...


@dataclass(frozen=True)
class Api:
    route: str
    request_model: type[BaseModel]
    request_body: Callable[[dict[str, Any]], Any]  # what the usage row keeps of the request
    prepare: Callable[[Context, web.Request, Call, dict[str, Any]], Awaitable[Compressed]]
    budget: Callable[[Context, Compressed], int]  # completion tokens to reserve
    cache_body: Callable[[dict[str, Any]], dict[str, Any]]
    complete: Callable[[dict[str, Any]], bool]  # worth storing
    usage: Callable[[dict[str, Any]], tuple[int | None, int]]  # (prompt, completion) of a whole answer
    # (context, body, headers to forward) → the provider's answer
    call_json: Callable[[Context, dict[str, Any], dict[str, str]], Awaitable[tuple[dict[str, Any], Served]]]
    call_stream: Callable[[Context, dict[str, Any], Served, dict[str, str]], AsyncGenerator[dict[str, Any], None]]
    fold: Callable[[dict[str, Any]], Fold]  # from the request body
    hit_json: Callable[[dict[str, Any]], dict[str, Any]]  # a stored answer as this request's answer
    replay: Callable[[dict[str, Any], dict[str, Any]], list[dict[str, Any]]]  # (stored answer, body) → stream
    named_events: bool  # ``event:`` lines and no ``[DONE]`` (the Responses API)
    error_event: Callable[[dict[str, Any]], dict[str, Any]]  # an error body as this API's in-band event


async def handle(request: web.Request, api: Api) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    body = await read_json(request, ctx.settings.max_body_bytes)
    validate(api.request_model, body)
    call = await accept(ctx, request, body, route=api.route, request_body=api.request_body(body))
    controls = with_body_cache(parse_cache_controls(request.headers), body)
    body = without_tags(body)  # the tags are deja's, not the model's
    with accounted(ctx, request, call) as trail:
        trail.compressed = compressed = await api.prepare(ctx, request, call, body)
        trail.admission = admission = await admit(ctx, call, compressed.tokens_sent + api.budget(ctx, compressed))
        trail.lookup = lookup = await cache_step.look_up(ctx, call, api.cache_body(compressed.body), controls)
        headers = answer_headers(call, compressed, admission) | debug_headers(request.headers, call.principal, lookup)
        if lookup.hit:
            response, trail.delivery = await _serve_hit(ctx, request, api, call, compressed, lookup, headers)
            return response
        headers["X-Deja-Cache"] = "bypass" if lookup.label in ("bypass", "off") else "miss"
        if call.stream:
            return await _stream_miss(ctx, request, api, call, compressed, lookup, headers, trail.meter)
        return await _json_miss(ctx, api, call, compressed, lookup, headers, trail.meter)


async def _serve_hit(ctx: Context, request: web.Request, api: Api, call: Call, compressed: Compressed,
                     lookup: Lookup, headers: dict[str, str]) -> tuple[web.StreamResponse, Delivery]:
    result = lookup.result
    assert result is not None and result.entry is not None
    headers.update(cache_headers(result, time.time()))
    stored = result.entry.response
    _, completion_tokens = api.usage(stored)
    delivery = Delivery(served=Served(), completion_tokens=completion_tokens, similarity=result.similarity,
                        saved_cache_usd=ctx.provider.cost(Served(), call.model, compressed.tokens_sent,
                                                          completion_tokens),
                        ttft=time.perf_counter() - call.started, response=stored)
    headers.update(await spend_headers(ctx, call, 0.0))
    if not call.stream:
        return json_response(api.hit_json(stored), headers=headers), delivery
    writer = SSEWriter(request, headers)
    for item in api.replay(stored, compressed.body):
        await (writer.send_event(item) if api.named_events else writer.send(item))
    await writer.done(b"" if api.named_events else b"data: [DONE]\n\n")
    return writer.response, delivery


def _failed(ctx: Context, call: Call, meter: Meter, exc: ProviderError) -> None:
    meter.upstream_ends()
    if meter.served.deployment is None:
        meter.served.deployment = exc.deployment or ctx.provider.first_deployment(call.model)


def _account(ctx: Context, call: Call, meter: Meter, prompt: int | None, completion: int | None, text: str) -> None:
    from compression import count_text_tokens

    if prompt:
        meter.prompt_tokens = prompt
    meter.completion_tokens = completion if completion is not None else (
        count_text_tokens(text, call.model) if text else 0)
    meter.cost_usd = ctx.provider.cost(meter.served, call.model, meter.prompt_tokens or 0, meter.completion_tokens)


async def _json_miss(ctx: Context, api: Api, call: Call, compressed: Compressed, lookup: Lookup,
                     headers: dict[str, str], meter: Meter) -> web.StreamResponse:
    meter.upstream_begins()
    try:
        data, served = await api.call_json(ctx, compressed.body, call.upstream_headers)
    except ProviderError as exc:
        _failed(ctx, call, meter, exc)
        raise
    meter.upstream_ends()
    meter.served = served
    meter.first_token()
    meter.prompt_tokens = compressed.tokens_sent
    prompt, completion = api.usage(data)
    _account(ctx, call, meter, prompt, completion, "")
    meter.response = data
    if api.complete(data):
        cache_step.store(ctx, lookup, api.cache_body(compressed.body), data)
    headers.update(await spend_headers(ctx, call, meter.cost_usd))
    return json_response(data, headers=headers)


async def _stream_miss(ctx: Context, request: web.Request, api: Api, call: Call, compressed: Compressed,
                       lookup: Lookup, headers: dict[str, str], meter: Meter) -> web.StreamResponse:
    headers.update(await spend_headers(ctx, call, None))  # the cost is not known before the headers go out
    writer = SSEWriter(request, headers)
    send = writer.send_event if api.named_events else writer.send
    fold = api.fold(compressed.body)
    meter.prompt_tokens = compressed.tokens_sent
    meter.upstream_begins()
    source = api.call_stream(ctx, compressed.body, meter.served, call.upstream_headers)
    writer.start_heartbeat(ctx.settings.keepalive_seconds)
    try:
        async for item in source:
            out = fold.feed(item)
            if fold.carries_text(item):
                meter.first_token()
            if out is not None:
                await send(out)
    except ProviderError as exc:
        _failed(ctx, call, meter, exc)
        if not writer.prepared:
            raise
        meter.error = err.to_openai_error(exc)  # the headers went out: the error goes in-band
        meter.error.__cause__ = exc
        await send(api.error_event(meter.error.body()))
        await writer.done(b"" if api.named_events else b"data: [DONE]\n\n")
        return writer.response
    finally:
        writer.stop_heartbeat()
        await source.aclose()  # a client gone mid-stream: the upstream connection is closed now, not at GC
        meter.upstream_ends()
        prompt, completion = fold.usage()
        _account(ctx, call, meter, prompt, completion, fold.text())
        meter.response = fold.whole()
    await writer.done(b"" if api.named_events else b"data: [DONE]\n\n")
    whole = fold.whole()
    if whole is not None and api.complete(whole):
        cache_step.store(ctx, lookup, api.cache_body(compressed.body), whole)
    return writer.response
