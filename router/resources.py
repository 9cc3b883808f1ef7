"""The app's shared resources, each created in a ``cleanup_ctx`` (cleanup runs only if its start-up succeeded).

Order: storage and usage writer → provider → the Redis pool → embedder and cache → auth and limiter →
background-task drain → the pipeline's typed ``Context``. Each package builds its own objects from its settings
(``router.storage.build_usage_writer``, ``router.limits.build_limiter``, the cache below); this module only wires
them together. One Redis client (one pool) is shared by the cache store, the limiter and readiness
(``router.redis_pool``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from router.appkeys import (
    AUTH,
    BACKGROUND,
    CACHE,
    CONTEXT,
    DB_SCHEMA,
    EMBEDDER,
    EMBEDDER_OVERRIDE,
    KEY_SPEND,
    LIMITER,
    METRICS,
    PROVIDER,
    PROVIDER_OVERRIDE,
    REDIS,
    REDIS_PING,
    SETTINGS,
    STORAGE,
    USAGE,
)
from router.config import ConfigError
from router.redis_pool import CACHE_SPACE, LIMITS_SPACE, key_space

log = logging.getLogger("deja")


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    from router.storage import build_usage_writer, open_storage, prepare_sqlite_dir

    settings = app[SETTINGS].deja
    prepare_sqlite_dir(settings.database_url)
    storage = open_storage(settings.database_url, schema=app.get(DB_SCHEMA) or settings.database_schema)
    await storage.connect()
    await storage.migrate()
    app[STORAGE] = storage
    writer = None
    if settings.usage.enabled:
        metrics = app[METRICS]

        def written(count: int) -> None:
            metrics.usage_written.inc(count)
            metrics.usage_queue.set(writer.depth if writer else 0)

        writer = build_usage_writer(storage, settings.usage, database_url=settings.database_url,
                                    on_written=written, on_error=lambda _msg: metrics.usage_errors.inc())
        await writer.start()
    app[USAGE] = writer
    from router.storage.spend import KeySpend

    app[KEY_SPEND] = spend = KeySpend(storage)
    try:
        yield
    finally:
        await spend.close()
        if writer is not None:
            await writer.close()
        await storage.close()


async def provider_ctx(app: web.Application) -> AsyncIterator[None]:
    """The provider: LiteLLM's Router (``providers.gateway.Gateway``), or an in-process one handed in (tests)."""
    given = app.get(PROVIDER_OVERRIDE)
    if given is not None:
        app[PROVIDER] = given
        yield
        return
    from providers.gateway import Gateway

    settings = app[SETTINGS]
    try:
        gateway = Gateway([m.model_dump() for m in settings.model_list], router_settings=settings.router_settings,
                          litellm_settings=settings.litellm_settings, sim_delay_ms=settings.deja.sim.delay_ms,
                          sim_word_delay_ms=settings.deja.sim.word_delay_ms,
                          direct_openai=settings.deja.direct_openai)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    app[PROVIDER] = gateway
    from compression import count_text_tokens

    for group in gateway.groups:  # load each tokenizer now (0.2 s each), not during someone's first request
        count_text_tokens("warm-up", group)
    try:
        yield
    finally:
        await gateway.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """With ``redis_url`` set: the one shared client, and ``/health/ready`` asks Redis too."""
    url = app[SETTINGS].deja.redis_url
    app[REDIS] = None
    if not url:
        yield
        return
    from router.redis_pool import bounded_client

    client = bounded_client(url)
    app[REDIS] = client

    async def redis_ping() -> bool:
        try:
            return bool(await asyncio.wait_for(client.ping(), 1))
        except Exception:  # any failure means "not ready"
            return False

    app[REDIS_PING] = redis_ping
    try:
        yield
    finally:
        await client.aclose()


def _needs_embedder(app: web.Application) -> bool:
    deja = app[SETTINGS].deja
    wants_auto = deja.compression.default == "auto" or "auto" in deja.compression.per_model.values()
    auto_embeds = deja.compression.auto_scorer == "embedding" and wants_auto
    return (deja.cache.enabled and deja.cache.semantic) or auto_embeds


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    from cache.embedder import create_embedder

    deja = app[SETTINGS].deja
    embedder: Any = app.get(EMBEDDER_OVERRIDE)
    owned = False
    if embedder is None and _needs_embedder(app):
        metrics = app[METRICS]
        embedder = await create_embedder(deja.cache.embedding_model, backend=deja.cache.embedding_backend,
                                         threads=deja.cache.embedding_threads, on_batch=metrics.on_embedding_batch)
        owned = True
    app[EMBEDDER] = embedder
    cache = None
    if deja.cache.enabled:
        from cache import build_cache

        backend, redis = deja.cache.backend, app[REDIS]
        use_redis = backend == "redis" or (backend == "auto" and redis is not None)
        if use_redis and redis is None:
            raise ConfigError("deja.cache.backend: redis needs deja.redis_url")
        cache = await build_cache(
            embedder=embedder, semantic=deja.cache.semantic, redis=redis if use_redis else None,
            redis_prefix=key_space(deja.redis_prefix, CACHE_SPACE), capacity=deja.cache.capacity,
            ttl_seconds=deja.cache.ttl_seconds, max_semantic_temperature=deja.cache.max_semantic_temperature,
            gate=deja.cache.gate, gate_threshold=deja.cache.gate_threshold, max_query_chars=deja.cache.max_query_chars)
        await cache.start()
    app[CACHE] = cache
    try:
        yield
    finally:
        if cache is not None:
            await cache.close()
        if owned and embedder is not None:
            await embedder.close()


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    from router.auth.keys import Authenticator
    from router.limits import build_limiter, limit_policy

    settings = app[SETTINGS]
    deja = settings.deja
    storage = app[STORAGE]
    app[AUTH] = Authenticator(master_key=settings.effective_master_key, lookup=storage.get_key_by_hash,
                              cache_ttl=deja.key_cache_ttl, policy=limit_policy(deja.limits))
    limiter = build_limiter(deja.limits, redis=app[REDIS], prefix=key_space(deja.redis_prefix, LIMITS_SPACE),
                            spend_loader=storage.key_spend_since, tenant_spend_loader=storage.tenant_spend_since,
                            on_unavailable=app[METRICS].limiter_unavailable.inc)
    app[LIMITER] = limiter
    try:
        yield
    finally:
        await limiter.close()


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    background: set[asyncio.Task[Any]] = set()
    app[BACKGROUND] = background
    yield
    tasks = list(background)
    if tasks:
        await asyncio.wait(tasks, timeout=10)


async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """Last: the typed view of every resource above that the request steps use."""
    from router.pipeline.context import build_context

    app[CONTEXT] = build_context(app)
    yield
