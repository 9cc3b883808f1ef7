"""Admission before a request is sent, and its accounting once it is answered.

``admit`` asks the key's limiter before anything is spent. ``finish`` turns the request's ``Outcome`` into
Prometheus observations, one ``UsageRecord`` (queued, written in batches off the hot path) and the limiter's
settlement. The access-log line and ``deja_requests_total`` are written by the HTTP middleware from the same
``Outcome`` (``router.http.middleware``), so all four agree on the status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import web

from router.http.errors import to_openai_error
from router.http.middleware import OUTCOME
from router.pipeline.context import Context
from router.pipeline.steps import Admission, Call, Compressed, Delivery, Lookup, Meter, Outcome
from router.storage import UsageRecord

log = logging.getLogger("deja.access")


async def admit(ctx: Context, call: Call, estimated_tokens: int) -> Admission:
    """Check the key's limits before anything is sent; raise the 429/503, or return the rate-limit headers."""
    limits = call.principal.limits
    if limits.unlimited:
        return Admission(headers={})
    decision = await ctx.limiter.admit(call.principal.key_id or "anonymous", limits,
                                       estimated_tokens=estimated_tokens)
    if not decision.allowed:
        ctx.metrics.ratelimit_rejections.labels(limit=decision.limit or "unknown").inc()
        decision.raise_for_denial()
    return Admission(headers=dict(decision.headers), decision=decision, estimated_tokens=estimated_tokens)


def _usd(value: float) -> str:
    return repr(round(value, 12))


async def spend_headers(ctx: Context, call: Call, cost_usd: float | None) -> dict[str, str]:
    """The answer's cost (LiteLLM's ``x-litellm-response-cost`` and deja's name for it) when it is known before
    the headers go out, and, for a virtual key, the key's spend so far including this answer. Never raises."""
    headers: dict[str, str] = {}
    if cost_usd is not None:
        headers["x-deja-response-cost"] = headers["x-litellm-response-cost"] = _usd(cost_usd)
    key_id = call.principal.key_id
    if key_id is not None and ctx.spend is not None:
        try:
            spent = await ctx.spend.current(key_id)
        except Exception:  # a courtesy header: never fail an answer over it
            log.debug("key spend unavailable for %s", key_id, exc_info=True)
            spent = None
        if spent is not None:
            headers["x-deja-key-spend"] = headers["x-litellm-key-spend"] = _usd(spent + (cost_usd or 0.0))
    return headers


def finish(ctx: Context, outcome: Outcome) -> None:
    """Account for the request. Never raises, never awaits: safe in ``finally`` even when the client went away."""
    try:
        _observe(ctx, outcome)
        _record(ctx, outcome)
        _settle(ctx, outcome)
        if ctx.spend is not None and outcome.call.principal.key_id is not None:
            ctx.spend.add(outcome.call.principal.key_id, outcome.cost_usd)
    except Exception:  # accounting must never turn an answered request into a failure
        log.exception("could not record request %s", outcome.call.request_id)


def _observe(ctx: Context, o: Outcome) -> None:
    metrics = ctx.metrics
    model, cache = o.call.model, o.cache
    metrics.duration.labels(route=o.call.route, model=model, cache=cache).observe(o.elapsed)
    ttft = o.delivery.ttft if o.delivery is not None else None
    if ttft is not None and o.call.stream:
        metrics.ttft.labels(model=model, cache=cache).observe(ttft)
    source, tenant = "cache" if o.hit else "upstream", o.call.principal.tenant
    if o.status < 400:
        metrics.observe_tokens(kind="prompt", source=source, model=model, tenant=tenant,
                               count=o.prompt_tokens_client if o.hit else o.prompt_tokens_sent)
        metrics.observe_tokens(kind="completion", source=source, model=model, tenant=tenant,
                               count=o.completion_tokens)
    if o.hit and o.delivery is not None:
        metrics.tokens_saved.labels(by="cache").inc(o.prompt_tokens_client + o.completion_tokens)
        metrics.cost_saved.labels(by="cache").inc(o.delivery.saved_cache_usd)
    elif o.status < 400 and o.compressed is not None:
        metrics.tokens_saved.labels(by="compression").inc(o.compressed.saved_tokens)
        metrics.cost_saved.labels(by="compression").inc(o.compressed.saved_usd)
    metrics.observe_spend(model=model, tenant=tenant, cost_usd=o.cost_usd, tags=o.call.tags)
    delivery = o.delivery
    if delivery is not None and delivery.served.deployment and delivery.upstream_seconds is not None:
        metrics.upstream.labels(deployment=delivery.served.deployment, status=str(o.status)).inc()
        metrics.upstream_duration.labels(deployment=delivery.served.deployment).observe(delivery.upstream_seconds)


def _body_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _record(ctx: Context, o: Outcome) -> None:
    writer = ctx.usage
    if writer is None:
        return
    store = ctx.settings.usage.store_messages
    call, delivery = o.call, o.delivery
    writer.submit(UsageRecord(
        request_id=call.request_id, ts=call.ts, route=call.route, key_id=call.principal.key_id,
        tenant=call.principal.tenant, end_user=call.end_user, model=call.model, deployment=o.deployment,
        provider=delivery.served.provider if delivery is not None else None, cache=o.cache,
        similarity=o.similarity, cache_reason=o.cache_reason,
        prompt_tokens_client=o.prompt_tokens_client, prompt_tokens_sent=o.prompt_tokens_sent,
        completion_tokens=o.completion_tokens, cost_usd=o.cost_usd,
        saved_cache_usd=delivery.saved_cache_usd if delivery is not None else 0.0,
        saved_compression_usd=o.compressed.saved_usd if o.compressed is not None else 0.0,
        latency_ms=o.elapsed * 1000,
        ttft_ms=None if delivery is None or delivery.ttft is None else delivery.ttft * 1000,
        status=o.status, error_type=o.error_type, stream=call.stream,
        request_body=_body_text(call.request_body) if store else None,
        response_body=_body_text(delivery.response if delivery is not None else None) if store else None,
        tags=orjson.dumps(list(call.tags)).decode() if call.tags else None,
        metadata=_body_text(call.metadata) if call.metadata else None,
        trace_id=call.trace.trace_id if call.trace is not None else None))
    ctx.metrics.usage_queue.set(writer.depth)


def _settle(ctx: Context, o: Outcome) -> None:
    decision = o.admission.decision if o.admission is not None else None
    if decision is None or decision.reservation is None:
        return
    actual = 0 if o.hit else o.prompt_tokens_sent + o.completion_tokens
    principal = o.call.principal
    ctx.spawn(ctx.limiter.settle(principal.key_id or "", principal.limits, decision, actual_tokens=actual,
                                 cost_usd=o.cost_usd))


def access_fields(o: Outcome, log_prompts: bool) -> dict[str, Any]:
    """What the access-log line says of a request the pipeline handled (the middleware adds the rest)."""
    call = o.call
    return {"key_id": call.principal.key_id, "tenant": call.principal.tenant, "model": call.model,
            "cache": o.cache, "stream": call.stream, "prompt_tokens": o.prompt_tokens_sent,
            "completion_tokens": o.completion_tokens, "error_type": o.error_type,
            **({"prompt": call.request_body} if log_prompts and call.request_body else {})}


class Trail:
    """The values a request's steps have returned so far. Only the flow function assigns them, each once, as the
    step returns; ``accounted`` builds the ``Outcome`` from them when the request ends, however it ends."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.compressed: Compressed | None = None
        self.admission: Admission | None = None
        self.lookup: Lookup | None = None
        self.delivery: Delivery | None = None  # a hit's; a call upstream is read from ``meter``
        self.meter = Meter(call.started)


@contextmanager
def accounted(ctx: Context, request: web.Request, call: Call) -> Iterator[Trail]:
    """Run a request's steps: any exception leaves as the one ``DejaError`` of ``to_openai_error`` (so the answer,
    the usage row, the metric and the log share its status), and the request is accounted exactly once."""
    trail, error = Trail(call), None
    try:
        yield trail
    except BaseException as exc:
        error = to_openai_error(exc)
        if isinstance(exc, Exception) and error is not exc:
            raise error from exc
        raise
    finally:
        delivery = trail.delivery if trail.delivery is not None else trail.meter.delivery()
        outcome = Outcome.build(call, compressed=trail.compressed, admission=trail.admission, lookup=trail.lookup,
                                delivery=delivery, error=error)
        request[OUTCOME] = outcome
        finish(ctx, outcome)
