"""``POST /v1/chat/completions``: the request flow, top to bottom.

parse → authenticate → compress → admit → look up the cache → (hit: answer) → route → stream back → finish.
Each step is a call into the package that owns it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from cache import CacheUnavailableError, LookupResult, Scope, build_scope
from compression import (
    CompressionError,
    CompressionOptions,
    CompressionReport,
    Level,
    compress,
    count_text_tokens,
    parse_level,
)
from providers.errors import ProviderError
from providers.gateway import Served
from router.appkeys import AUTH, CACHE, EMBEDDER, GATEWAY, METRICS, SETTINGS, spawn
from router.http import errors as err
from router.http.middleware import MODEL_LABEL, REQUEST_ID, STATUS_LABEL, json_response, provider_error
from router.http.parsing import ChatRequest, read_json, validate
from router.http.sse import SSEWriter, StreamAccumulator, fresh_identity, replay_chunks
from router.pipeline.accounting import Exchange, admit, finish
from router.pipeline.cache_controls import CacheControls, cache_headers, parse_cache_controls


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS].deja
    body = await read_json(request, settings.max_body_bytes)
    validate(ChatRequest, body)
    principal = await app[AUTH].authenticate(request.headers)
    model = body["model"]
    app[GATEWAY].check_model(model)
    request[MODEL_LABEL] = model
    app[AUTH].check_model(principal, model)
    controls = parse_cache_controls(request.headers)
    ex = Exchange(request_id=request[REQUEST_ID], route="chat", principal=principal, model=model,
                  stream=bool(body.get("stream")), end_user=body.get("user") if isinstance(body.get("user"), str)
                  else None, request_body=body.get("messages"))
    try:
        return await _answer(request, body, ex, controls)
    except asyncio.CancelledError:
        ex.status, ex.error_type = 499, "client_disconnected"
        raise
    except Exception as exc:
        error = provider_error(exc) if isinstance(exc, ProviderError) else exc
        ex.status = getattr(error, "status", 500)
        ex.error_type = type(exc).__name__
        raise
    finally:
        finish(app, ex)


def _level(request: web.Request, ex: Exchange) -> Level:
    """The header wins, then the key's ``metadata.compression``, then the model group's, then the default."""
    compression = request.app[SETTINGS].deja.compression
    default = parse_level(compression.per_model.get(ex.model, compression.default), Level.LOSSLESS)
    chosen = [(request.headers.get("X-Deja-Compression"), "X-Deja-Compression"),
              (ex.principal.metadata.get("compression"), "metadata.compression")]
    for value, where in chosen:
        if value is not None:
            try:
                return parse_level(str(value), default)
            except CompressionError as exc:
                raise err.BadRequestError(str(exc), param=where, code="invalid_compression_level") from exc
    return default


async def _compress(request: web.Request, body: dict[str, Any], ex: Exchange) -> tuple[dict, CompressionReport]:
    settings = request.app[SETTINGS].deja.compression
    embedder = request.app.get(EMBEDDER)
    options = CompressionOptions(auto_min_tokens=settings.auto_min_tokens, auto_ratio=settings.auto_ratio,
                                 auto_scorer=settings.auto_scorer)
    messages, report = await compress(body["messages"], level=_level(request, ex), model=ex.model,
                                      embed=embedder.embed if embedder is not None else None, options=options)
    ex.prompt_tokens_client, ex.prompt_tokens_sent = report.tokens_original, report.tokens_sent
    ex.compression_saved_tokens = max(0, report.tokens_original - report.tokens_sent)
    sent = body if messages is body["messages"] else {**body, "messages": messages}
    return sent, report


async def _admit(request: web.Request, ex: Exchange, body: dict[str, Any]) -> dict[str, str]:
    default_completion = request.app[SETTINGS].deja.limits.default_max_tokens
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or default_completion
    return await admit(request.app, ex, ex.prompt_tokens_sent + int(completion) * int(body.get("n") or 1))


async def _lookup(request: web.Request, body: dict[str, Any], ex: Exchange,
                  controls: CacheControls) -> tuple[Scope | None, str | None, LookupResult | None]:
    cache = request.app.get(CACHE)
    if cache is None or controls.no_store:
        ex.cache = "bypass" if cache is not None else "off"
        return None, None, None
    scope, query = build_scope(body, tenant=ex.principal.tenant, namespace=controls.namespace)
    if controls.no_cache:
        ex.cache = "bypass"
        return scope, query, None
    metrics = request.app[METRICS]
    try:
        threshold = controls.threshold
        if threshold is None:
            threshold = request.app[SETTINGS].deja.cache.threshold  # None: the verifier's calibrated floor
        result = await cache.lookup(scope, body, query, threshold=threshold)
    except CacheUnavailableError:
        metrics.cache_errors.inc()
        metrics.cache_lookups.labels(result="error").inc()
        ex.cache = "bypass"
        return None, None, None
    if result.best_similarity is not None:
        metrics.cache_similarity.observe(result.best_similarity)
    metrics.cache_lookups.labels(result=result.kind).inc()
    ex.cache = result.kind
    return scope, query, result


async def _answer(request: web.Request, body: dict[str, Any], ex: Exchange,
                  controls: CacheControls) -> web.StreamResponse:
    sent, report = await _compress(request, body, ex)
    headers = {"X-Deja-Request-Id": ex.request_id,
               "X-Deja-Prompt-Tokens-Original": str(report.tokens_original),
               "X-Deja-Prompt-Tokens-Sent": str(report.tokens_sent)}
    headers.update(await _admit(request, ex, sent))
    scope, query, result = await _lookup(request, sent, ex, controls)
    gateway = request.app[GATEWAY]
    if ex.compression_saved_tokens:
        served_guess = Served(litellm_model=gateway.litellm_model(ex.model))
        ex.saved_compression_usd = gateway.cost(served_guess, ex.model, ex.compression_saved_tokens, 0)
    if result is not None and result.entry is not None:
        return await _serve_hit(request, body, ex, result, headers)
    headers["X-Deja-Cache"] = "bypass" if ex.cache in ("bypass", "off") else "miss"
    store = None
    if scope is not None and not controls.no_store:
        store = (scope, query, controls.ttl)
    if body.get("stream"):
        return await _stream_miss(request, sent, ex, headers, store)
    return await _json_miss(request, sent, ex, headers, store)


async def _serve_hit(request: web.Request, body: dict[str, Any], ex: Exchange, result: LookupResult,
                     headers: dict[str, str]) -> web.StreamResponse:
    entry = result.entry
    assert entry is not None
    headers.update(cache_headers(result, time.time()))
    response = entry.response
    usage = response.get("usage") or {}
    ex.similarity = result.similarity
    ex.completion_tokens = int(usage.get("completion_tokens") or 0)
    ex.saved_cache_usd = request.app[GATEWAY].cost(Served(), ex.model, ex.prompt_tokens_sent, ex.completion_tokens)
    ex.response_body = response
    if not body.get("stream"):
        cid, created = fresh_identity(response)
        ex.first_token()
        return json_response({**response, "id": cid, "created": created}, headers=headers)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = SSEWriter(request, headers)
    for chunk in replay_chunks(response, include_usage=include_usage):
        await writer.send(chunk)
        ex.first_token()
    await writer.done()
    return writer.response


def _store(request: web.Request, store: tuple[Scope, str | None, float | None] | None, body: dict[str, Any],
           response: dict[str, Any]) -> None:
    cache = request.app.get(CACHE)
    if store is None or cache is None:
        return
    scope, query, ttl = store

    async def run() -> None:
        try:
            await cache.store(scope, body, query, response, ttl_seconds=ttl)
        except CacheUnavailableError:
            request.app[METRICS].cache_errors.inc()

    spawn(request.app, run())


def _account(request: web.Request, ex: Exchange, served: Served, usage: dict[str, Any] | None,
             completion_text: str) -> None:
    gateway = request.app[GATEWAY]
    if usage:
        ex.prompt_tokens_sent = int(usage.get("prompt_tokens") or ex.prompt_tokens_sent)
        ex.completion_tokens = int(usage.get("completion_tokens") or 0)
    else:
        ex.completion_tokens = count_text_tokens(completion_text, ex.model) if completion_text else 0
    ex.deployment, ex.provider = served.deployment or ex.deployment, served.provider
    ex.cost_usd = gateway.cost(served, ex.model, ex.prompt_tokens_sent, ex.completion_tokens)


async def _json_miss(request: web.Request, body: dict[str, Any], ex: Exchange, headers: dict[str, str],
                     store: tuple[Scope, str | None, float | None] | None) -> web.StreamResponse:
    started = time.perf_counter()
    gateway = request.app[GATEWAY]
    try:
        data, served = await gateway.complete(body)
    except ProviderError as exc:
        ex.upstream_failed(exc, started, gateway.first_deployment(ex.model))
        raise
    ex.upstream_seconds = time.perf_counter() - started
    ex.first_token()
    _account(request, ex, served, data.get("usage"), "")
    ex.response_body = data
    if data.get("choices") and all(c.get("finish_reason") in ("stop", "length", "tool_calls")
                                   for c in data["choices"]):
        _store(request, store, body, data)
    return json_response(data, headers=headers)


async def _stream_miss(request: web.Request, body: dict[str, Any], ex: Exchange, headers: dict[str, str],
                       store: tuple[Scope, str | None, float | None] | None) -> web.StreamResponse:
    app = request.app
    client_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    upstream_body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    served = Served()
    writer = SSEWriter(request, headers)
    acc = StreamAccumulator()
    started = time.perf_counter()
    source = app[GATEWAY].stream(upstream_body, served)
    writer.start_heartbeat(app[SETTINGS].deja.keepalive_seconds)
    try:
        async for item in source:
            acc.feed(item)
            if "usage" in item and not item["choices"]:
                if not client_usage:
                    continue
            elif "usage" in item and not client_usage:
                item = {k: v for k, v in item.items() if k != "usage"}
            if item["choices"] and any(c["delta"] for c in item["choices"]):
                ex.first_token()
            await writer.send(item)
    except ProviderError as exc:
        ex.upstream_failed(exc, started, served.deployment or app[GATEWAY].first_deployment(ex.model))
        error = provider_error(exc)
        if not writer.prepared:
            raise
        ex.status, ex.error_type = 502, type(exc).__name__
        request[STATUS_LABEL] = str(error.status)
        await writer.error(error.body())
        return writer.response
    finally:
        writer.stop_heartbeat()
        await source.aclose()  # a client gone mid-stream: the upstream connection is closed now, not at GC
        if ex.upstream_seconds is None:
            ex.upstream_seconds = time.perf_counter() - started
        _account(request, ex, served, acc.usage, acc.text)
        ex.response_body = acc.completion() if acc.choices else None
    await writer.done()
    if acc.cacheable:
        _store(request, store, body, acc.completion())
    return writer.response
