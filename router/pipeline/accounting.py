"""One request's accounting, and what happens once it is answered: usage row, metrics, limiter settlement.

``Exchange`` collects what the request flow learns step by step; ``finish`` turns it into a ``UsageRecord``
(queued, written in batches off the hot path), Prometheus observations and the limiter's correction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from router.appkeys import LIMITER, METRICS, SETTINGS, USAGE, spawn

if TYPE_CHECKING:
    from router.auth.keys import Principal
    from router.limits.memory import Decision

log = logging.getLogger("deja.access")


@dataclass
class Exchange:
    request_id: str
    route: str
    principal: Principal
    model: str
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    stream: bool = False
    end_user: str | None = None
    cache: str = "off"  # exact | semantic | miss | bypass | off
    similarity: float | None = None
    prompt_tokens_client: int = 0
    prompt_tokens_sent: int = 0
    compression_saved_tokens: int = 0  # by deja's own count, before and after compression
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_cache_usd: float = 0.0
    saved_compression_usd: float = 0.0
    deployment: str | None = None
    provider: str | None = None
    ttft: float | None = None
    status: int = 200
    error_type: str | None = None
    decision: Decision | None = None
    estimated_tokens: int = 0
    request_body: Any = None
    response_body: Any = None
    upstream_seconds: float | None = None

    def upstream_failed(self, exc: Exception, started: float, fallback_deployment: str | None) -> None:
        """Attribute a failed provider call to its deployment, for the per-deployment metrics."""
        self.upstream_seconds = time.perf_counter() - started
        self.deployment = self.deployment or getattr(exc, "deployment", None) or fallback_deployment

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


async def admit(app: web.Application, ex: Exchange, estimated_tokens: int) -> dict[str, str]:
    """Check the key's limits before anything is sent; raise the 429/503, or return the rate-limit headers."""
    limits = ex.principal.limits
    if limits.unlimited:
        return {}
    ex.estimated_tokens = estimated_tokens
    decision = await app[LIMITER].admit(ex.principal.key_id or "anonymous", limits,
                                        estimated_tokens=estimated_tokens)
    if not decision.allowed:
        app[METRICS].ratelimit_rejections.labels(limit=decision.limit or "unknown").inc()
        decision.raise_for_denial()
    ex.decision = decision
    return dict(decision.headers)


def _body_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def finish(app: web.Application, ex: Exchange) -> None:
    """Record the exchange. Never raises, never awaits: safe in ``finally`` even when the client went away."""
    try:
        _observe(app, ex)
        _record(app, ex)
        _settle(app, ex)
        _log(app, ex)
    except Exception:  # accounting must never turn an answered request into a failure
        log.exception("could not record request %s", ex.request_id)


def _observe(app: web.Application, ex: Exchange) -> None:
    metrics = app[METRICS]
    model, cache = ex.model, ex.cache
    metrics.duration.labels(route=ex.route, model=model, cache=cache).observe(ex.elapsed)
    if ex.ttft is not None and ex.stream:
        metrics.ttft.labels(model=model, cache=cache).observe(ex.ttft)
    hit = cache in ("exact", "semantic")
    source = "cache" if hit else "upstream"
    if ex.status < 400:
        metrics.tokens.labels(kind="prompt", source=source).inc(ex.prompt_tokens_sent if not hit
                                                                  else ex.prompt_tokens_client)
        metrics.tokens.labels(kind="completion", source=source).inc(ex.completion_tokens)
    if hit:
        metrics.tokens_saved.labels(by="cache").inc(ex.prompt_tokens_client + ex.completion_tokens)
        metrics.cost_saved.labels(by="cache").inc(ex.saved_cache_usd)
    elif ex.status < 400:
        metrics.tokens_saved.labels(by="compression").inc(ex.compression_saved_tokens)
        metrics.cost_saved.labels(by="compression").inc(ex.saved_compression_usd)
    metrics.cost.inc(ex.cost_usd)
    if ex.deployment and ex.upstream_seconds is not None:
        metrics.upstream.labels(deployment=ex.deployment, status=str(ex.status)).inc()
        metrics.upstream_duration.labels(deployment=ex.deployment).observe(ex.upstream_seconds)


def _record(app: web.Application, ex: Exchange) -> None:
    writer = app.get(USAGE)
    if writer is None:
        return
    from router.storage import UsageRecord

    store = app[SETTINGS].deja.usage.store_messages
    writer.submit(UsageRecord(
        request_id=ex.request_id, ts=ex.ts, route=ex.route, key_id=ex.principal.key_id,
        tenant=ex.principal.tenant, end_user=ex.end_user, model=ex.model, deployment=ex.deployment,
        provider=ex.provider, cache=ex.cache, similarity=ex.similarity,
        prompt_tokens_client=ex.prompt_tokens_client, prompt_tokens_sent=ex.prompt_tokens_sent,
        completion_tokens=ex.completion_tokens, cost_usd=ex.cost_usd, saved_cache_usd=ex.saved_cache_usd,
        saved_compression_usd=ex.saved_compression_usd, latency_ms=ex.elapsed * 1000,
        ttft_ms=None if ex.ttft is None else ex.ttft * 1000, status=ex.status, error_type=ex.error_type,
        stream=ex.stream, request_body=_body_text(ex.request_body) if store else None,
        response_body=_body_text(ex.response_body) if store else None))
    app[METRICS].usage_queue.set(writer.depth)


def _settle(app: web.Application, ex: Exchange) -> None:
    decision = ex.decision
    if decision is None or decision.reservation is None:
        return
    hit = ex.cache in ("exact", "semantic")
    actual = 0 if hit else ex.prompt_tokens_sent + ex.completion_tokens
    limiter = app[LIMITER]
    spawn(app, limiter.settle(ex.principal.key_id or "", ex.principal.limits, decision,
                              actual_tokens=actual, cost_usd=ex.cost_usd))


def _log(app: web.Application, ex: Exchange) -> None:
    log.info("request", extra={"event": {
        "request_id": ex.request_id, "key_id": ex.principal.key_id, "tenant": ex.principal.tenant,
        "route": ex.route, "model": ex.model, "cache": ex.cache, "status": ex.status, "stream": ex.stream,
        "latency_ms": round(ex.elapsed * 1000, 2), "prompt_tokens": ex.prompt_tokens_sent,
        "completion_tokens": ex.completion_tokens, "error_type": ex.error_type,
        **({"prompt": ex.request_body} if app[SETTINGS].deja.log_prompts and ex.request_body else {})}})
