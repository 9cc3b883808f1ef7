"""``POST /v1/chat/completions``: the request flow, top to bottom, in ``chat_completions``.

parse → authenticate (``accept``) → compress → admit → look up the cache → serve the hit, or call the upstream
(JSON or a stream) → account. Each step is a call into the package that owns it and returns a typed value
(``router.pipeline.steps``); the usage row, metrics and log line are built once, from those values, at the end.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from compression import CompressionError, CompressionOptions, Level, compress, count_text_tokens, parse_level
from providers.errors import ProviderError
from providers.interface import Served
from router.appkeys import CONTEXT
from router.http import errors as err
from router.http.attribution import attribution, without_tags
from router.http.middleware import MODEL_LABEL, REQUEST_ID, json_response
from router.http.parsing import ChatRequest, read_json, validate, without_nulls
from router.http.sse import SSEWriter, StreamAccumulator, fresh_identity, replay_chunks
from router.http.tracing import trace_context
from router.pipeline import cache_step
from router.pipeline.accounting import accounted, admit, spend_headers
from router.pipeline.body_cache import with_body_cache
from router.pipeline.cache_controls import cache_headers, parse_cache_controls
from router.pipeline.cache_debug import debug_headers
from router.pipeline.context import Context
from router.pipeline.steps import Admission, Call, Compressed, Delivery, Lookup, Meter

_COMPLETE = ("stop", "length", "tool_calls")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    body = without_nulls(await read_json(request, ctx.settings.max_body_bytes))
    validate(ChatRequest, body)
    call = await accept(ctx, request, body, route="chat", request_body=body.get("messages"))
    controls = with_body_cache(parse_cache_controls(request.headers), body)
    body = without_tags(body)  # the tags are deja's, not the model's
    with accounted(ctx, request, call) as trail:
        trail.compressed = compressed = await compress_step(ctx, request, call, body)
        trail.admission = admission = await admit(ctx, call, completion_budget(ctx, compressed))
        trail.lookup = lookup = await cache_step.look_up(ctx, call, compressed.body, controls)
        headers = answer_headers(call, compressed, admission) | debug_headers(request.headers, call.principal, lookup)
        if lookup.hit:
            response, trail.delivery = await serve_hit(ctx, request, call, compressed, lookup, headers)
            return response
        headers["X-Deja-Cache"] = "bypass" if lookup.label in ("bypass", "off") else "miss"
        headers.update(cache_step.skipped_headers(lookup))
        if call.stream:
            return await stream_miss(ctx, request, call, compressed, lookup, headers, trail.meter)
        return await json_miss(ctx, call, compressed, lookup, headers, trail.meter)


async def accept(ctx: Context, request: web.Request, body: dict[str, Any], *, route: str,
                 request_body: Any) -> Call:
    """Authenticate and check the model: the ``Call`` every later step refers to."""
    principal = await ctx.auth.authenticate(request.headers)
    model = body["model"]
    ctx.provider.check_model(model)
    request[MODEL_LABEL] = model
    ctx.auth.check_model(principal, model, ctx.provider.resolve(model))
    user = body.get("user")
    found = attribution(request.headers, body)
    return Call(request_id=request[REQUEST_ID], route=route, principal=principal, model=model,
                stream=bool(body.get("stream")), end_user=user if isinstance(user, str) else None,
                request_body=request_body, tags=found.tags, metadata=found.metadata,
                trace=trace_context(request.headers))


def level_for(ctx: Context, request: web.Request, call: Call) -> Level:
    """The header wins, then the key's ``metadata.compression``, then the model group's, then the default."""
    compression = ctx.settings.compression
    default = parse_level(compression.per_model.get(call.model, compression.default), Level.LOSSLESS)
    chosen = [(request.headers.get("X-Deja-Compression"), "X-Deja-Compression"),
              (call.principal.metadata.get("compression"), "metadata.compression")]
    for value, where in chosen:
        if value is not None:
            try:
                return parse_level(str(value), default)
            except CompressionError as exc:
                raise err.BadRequestError(str(exc), param=where, code="invalid_compression_level") from exc
    return default


async def compress_step(ctx: Context, request: web.Request, call: Call, body: dict[str, Any]) -> Compressed:
    settings = ctx.settings.compression
    options = CompressionOptions(auto_min_tokens=settings.auto_min_tokens, auto_ratio=settings.auto_ratio,
                                 auto_scorer=settings.auto_scorer)
    embed = ctx.embedder.embed if ctx.embedder is not None else None
    messages, report = await compress(body["messages"], level=level_for(ctx, request, call), model=call.model,
                                      embed=embed, options=options)
    sent = body if messages is body["messages"] else {**body, "messages": messages}
    saved = max(0, report.tokens_original - report.tokens_sent)
    saved_usd = ctx.provider.cost(Served(), call.model, saved, 0) if saved else 0.0
    return Compressed(body=sent, tokens_original=report.tokens_original, tokens_sent=report.tokens_sent,
                      saved_usd=saved_usd)


def completion_budget(ctx: Context, compressed: Compressed) -> int:
    """Tokens to reserve against the key's limits: the prompt plus the most the answer may take."""
    body = compressed.body
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or ctx.settings.limits.default_max_tokens
    return compressed.tokens_sent + int(completion) * int(body.get("n") or 1)


def answer_headers(call: Call, compressed: Compressed, admission: Admission) -> dict[str, str]:
    return {"X-Deja-Request-Id": call.request_id, "X-Request-Id": call.request_id,
            "X-Deja-Prompt-Tokens-Original": str(compressed.tokens_original),
            "X-Deja-Prompt-Tokens-Sent": str(compressed.tokens_sent), **admission.headers}


async def serve_hit(ctx: Context, request: web.Request, call: Call, compressed: Compressed, lookup: Lookup,
                    headers: dict[str, str]) -> tuple[web.StreamResponse, Delivery]:
    result = lookup.result
    assert result is not None and result.entry is not None
    headers.update(cache_headers(result, time.time()))
    response = result.entry.response
    completion_tokens = int((response.get("usage") or {}).get("completion_tokens") or 0)
    delivery = Delivery(served=Served(), completion_tokens=completion_tokens, similarity=result.similarity,
                        saved_cache_usd=ctx.provider.cost(Served(), call.model, compressed.tokens_sent,
                                                          completion_tokens),
                        ttft=time.perf_counter() - call.started, response=response)
    body = compressed.body
    headers.update(await spend_headers(ctx, call, 0.0))
    if not body.get("stream"):
        cid, created = fresh_identity(response)
        return json_response({**response, "id": cid, "created": created}, headers=headers), delivery
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = SSEWriter(request, headers)
    for chunk in replay_chunks(response, include_usage=include_usage):
        await writer.send(chunk)
    await writer.done()
    return writer.response, delivery


def _account(ctx: Context, call: Call, meter: Meter, usage: dict[str, Any] | None, completion_text: str) -> None:
    if usage:
        meter.prompt_tokens = int(usage.get("prompt_tokens") or meter.prompt_tokens or 0)
        meter.completion_tokens = int(usage.get("completion_tokens") or 0)
    else:
        meter.completion_tokens = count_text_tokens(completion_text, call.model) if completion_text else 0
    meter.cost_usd = ctx.provider.cost(meter.served, call.model, meter.prompt_tokens or 0, meter.completion_tokens)


def _failed(ctx: Context, call: Call, meter: Meter, exc: ProviderError) -> None:
    """Attribute a failed provider call to its deployment, for the per-deployment metrics."""
    meter.upstream_ends()
    if meter.served.deployment is None:
        meter.served.deployment = exc.deployment or ctx.provider.first_deployment(call.model)


async def json_miss(ctx: Context, call: Call, compressed: Compressed, lookup: Lookup, headers: dict[str, str],
                    meter: Meter) -> web.StreamResponse:
    meter.upstream_begins()
    try:
        data, served = await ctx.provider.complete(compressed.body, call.upstream_headers)
    except ProviderError as exc:
        _failed(ctx, call, meter, exc)
        raise
    meter.upstream_ends()
    meter.served = served
    meter.first_token()
    meter.prompt_tokens = compressed.tokens_sent
    _account(ctx, call, meter, data.get("usage"), "")
    meter.response = data
    if data.get("choices") and all(c.get("finish_reason") in _COMPLETE for c in data["choices"]):
        cache_step.store(ctx, lookup, compressed.body, data)
    headers.update(await spend_headers(ctx, call, meter.cost_usd))
    return json_response(data, headers=headers)


async def stream_miss(ctx: Context, request: web.Request, call: Call, compressed: Compressed, lookup: Lookup,
                      headers: dict[str, str], meter: Meter) -> web.StreamResponse:
    body = compressed.body
    client_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    upstream_body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    headers.update(await spend_headers(ctx, call, None))  # the cost is not known before the headers go out
    writer = SSEWriter(request, headers)
    acc = StreamAccumulator()
    meter.prompt_tokens = compressed.tokens_sent
    meter.upstream_begins()
    source = ctx.provider.stream(upstream_body, meter.served, call.upstream_headers)
    writer.start_heartbeat(ctx.settings.keepalive_seconds)
    try:
        async for item in source:
            acc.feed(item)
            if "usage" in item and not item["choices"]:
                if not client_usage:
                    continue
            elif "usage" in item and not client_usage:
                item = {k: v for k, v in item.items() if k != "usage"}
            if item["choices"] and any(c["delta"] for c in item["choices"]):
                meter.first_token()
            await writer.send(item)
    except ProviderError as exc:
        _failed(ctx, call, meter, exc)
        if not writer.prepared:
            raise
        meter.error = err.to_openai_error(exc)  # the headers went out: the error goes in-band
        meter.error.__cause__ = exc
        await writer.error(meter.error.body())
        return writer.response
    finally:
        writer.stop_heartbeat()
        await source.aclose()  # a client gone mid-stream: the upstream connection is closed now, not at GC
        meter.upstream_ends()
        _account(ctx, call, meter, acc.usage, acc.text)
        meter.response = acc.completion() if acc.choices else None
    await writer.done()
    if acc.cacheable:
        cache_step.store(ctx, lookup, body, acc.completion())
    return writer.response

