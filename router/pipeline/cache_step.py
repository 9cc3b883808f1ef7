"""The cache's step in the request flow: look up (``look_up`` → ``Lookup``) and, after a complete fresh answer,
store in the background (``store``)."""

from __future__ import annotations

import time
from typing import Any

from cache import CacheUnavailableError, build_scope
from router.pipeline.cache_controls import CacheControls
from router.pipeline.cache_debug import explain, metric_reason, too_old
from router.pipeline.context import Context
from router.pipeline.steps import Call, Lookup


async def look_up(ctx: Context, call: Call, body: dict[str, Any], controls: CacheControls) -> Lookup:
    cache = ctx.cache
    if cache is None:
        return Lookup("off")
    if controls.no_store:
        return Lookup("bypass")
    group = ctx.provider.resolve(call.model)  # an alias and its group share one scope, as they share deployments
    scoped = body if body.get("model") == group else {**body, "model": group}
    scope, query = build_scope(scoped, tenant=call.principal.tenant, namespace=controls.namespace)
    if controls.no_cache:
        return Lookup("bypass", scope=scope, query=query, store_ttl=controls.ttl)
    metrics = ctx.metrics
    threshold = controls.threshold if controls.threshold is not None else ctx.settings.cache.threshold
    # Under load, a miss's HNSW insert goes right after its search, whose memory is still in the CPU's caches
    # (CPU is what is short then); alone, it waits for after the answer, off this request's latency, and the
    # transformer starts beside the verifier's precheck instead of after it (latency is what counts then).
    busy = metrics.in_progress > 1
    try:
        result = await cache.lookup(scope, body, query, threshold=threshold, reserve=busy, eager=not busy)
    except CacheUnavailableError:
        metrics.cache_errors.inc()
        metrics.cache_lookups.labels(result="error").inc()
        return Lookup("bypass")
    entry = result.entry
    if entry is not None and controls.max_age is not None and time.time() - entry.created_at > controls.max_age:
        metrics.cache_lookups.labels(result="miss").inc()  # older than the client accepts: answered afresh
        return Lookup("miss", scope=scope, query=query, store_ttl=controls.ttl, explanation=too_old(result))
    if result.best_similarity is not None:
        metrics.cache_similarity.observe(result.best_similarity)
    metrics.cache_lookups.labels(result=result.kind).inc()
    explanation = explain(result, floor=cache.floor(threshold), semantic=cache.semantic_applicable(body, query))
    if explanation.rejected:
        metrics.cache_rejections.labels(reason=metric_reason(explanation.reason)).inc()
    if result.rejected_reason == TOO_LONG:
        metrics.skipped.labels(step="verifier", reason=TOO_LONG).inc()
    if getattr(result, "skipped", None) == "too_large":
        metrics.skipped.labels(step="semantic", reason="too-large").inc()
    return Lookup(result.kind, result=result, scope=scope, query=query, store_ttl=controls.ttl,
                  explanation=explanation)


TOO_LONG = "too-long"  # cache.verify: a text over MAX_VERIFY_CHARS is not verified, the candidate not served


def skipped_headers(lookup: Lookup) -> dict[str, str]:
    """``X-Deja-Skipped: verifier:too-long`` when the semantic candidate was not checked: the prompt was too
    long for the verifier (so the answer is a miss, never an unverified hit); ``semantic:too-large`` when the last
    user message is over ``cache.max_query_chars`` and the semantic tier was not tried at all."""
    if lookup.result is not None and lookup.result.rejected_reason == TOO_LONG:
        return {"X-Deja-Skipped": f"verifier:{TOO_LONG}"}
    if lookup.result is not None and getattr(lookup.result, "skipped", None) == "too_large":
        return {"X-Deja-Skipped": "semantic:too-large"}
    return {}


def store(ctx: Context, lookup: Lookup, body: dict[str, Any], response: dict[str, Any]) -> None:
    """Store a complete answer off the response path (a client going away cannot cancel it)."""
    cache, scope = ctx.cache, lookup.scope
    if cache is None or scope is None:
        return

    async def run() -> None:
        try:
            await cache.store(scope, body, lookup.query, response, ttl_seconds=lookup.store_ttl,
                              lookup=lookup.result)
        except CacheUnavailableError:
            ctx.metrics.cache_errors.inc()

    ctx.spawn(run())
