"""The app's shared resources, each created in a ``cleanup_ctx`` (cleanup runs only if start-up succeeded).

Order: storage and usage writer → gateway → embedder and cache → auth and limiter → background-task drain.
All Redis key prefixes are derived here from ``deja.redis_prefix``: ``<prefix>cache:`` and ``<prefix>rl:``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
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
    LIMITER,
    METRICS,
    PROVIDER,
    PROVIDER_OVERRIDE,
    REDIS_PING,
    SETTINGS,
    STORAGE,
    USAGE,
)

log = logging.getLogger("deja")


def redis_prefixes(prefix: str) -> dict[str, str]:
    return {"cache": f"{prefix}cache:", "limits": f"{prefix}rl:"}


def _sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    from router.storage import UsageWriter, open_storage

    settings = app[SETTINGS].deja
    _sqlite_dir(settings.database_url)
    storage = open_storage(settings.database_url, schema=app.get(DB_SCHEMA) or settings.database_schema)
    await storage.connect()
    await storage.migrate()
    app[STORAGE] = storage
    usage = settings.usage
    writer = None
    if usage.enabled:
        metrics = app[METRICS]
        spill = usage.spill_path
        if spill is None and settings.database_url.startswith("sqlite:///") and ":memory:" not in settings.database_url:
            spill = str(Path(settings.database_url.removeprefix("sqlite:///")).parent / "usage-spill.jsonl")
        elif spill is None:
            spill = str(Path(".deja") / "usage-spill.jsonl")
        Path(spill).parent.mkdir(parents=True, exist_ok=True)

        def written(count: int) -> None:
            metrics.usage_written.inc(count)
            metrics.usage_queue.set(writer.depth if writer else 0)

        writer = UsageWriter(storage, max_queue=usage.queue_max, batch_size=usage.batch_size,
                             flush_interval=usage.flush_interval, spill_path=spill,
                             max_body_bytes=usage.max_body_bytes, store_bodies=usage.store_messages,
                             retention_days=usage.retention_days, on_written=written,
                             on_error=lambda _msg: metrics.usage_errors.inc())
        await writer.start()
    app[USAGE] = writer
    try:
        yield
    finally:
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
        from router.config import ConfigError

        raise ConfigError(str(exc)) from exc
    app[PROVIDER] = gateway
    from compression import count_text_tokens

    for group in gateway.groups:  # load each tokenizer now (0.2 s each), not during someone's first request
        count_text_tokens("warm-up", group)
    try:
        yield
    finally:
        await gateway.close()


def _needs_embedder(app: web.Application) -> bool:
    deja = app[SETTINGS].deja
    wants_auto = deja.compression.default == "auto" or "auto" in deja.compression.per_model.values()
    auto_embeds = deja.compression.auto_scorer == "embedding" and wants_auto
    return (deja.cache.enabled and deja.cache.semantic) or auto_embeds


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    from cache import MemoryStore, RedisStore, SemanticCache
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
        backend = deja.cache.backend
        if backend == "redis" or (backend == "auto" and deja.redis_url):
            if not deja.redis_url:
                from router.config import ConfigError

                raise ConfigError("deja.cache.backend: redis needs deja.redis_url")
            store: Any = RedisStore(deja.redis_url, prefix=redis_prefixes(deja.redis_prefix)["cache"],
                                    capacity=deja.cache.capacity)
        else:
            store = MemoryStore(capacity=deja.cache.capacity)
        verifier = None
        if deja.cache.semantic:
            from cache.verify import Verifier

            verifier = Verifier.load_default()
        cache = SemanticCache(store, embedder if deja.cache.semantic else None, verifier,
                              ttl_seconds=deja.cache.ttl_seconds,
                              max_semantic_temperature=deja.cache.max_semantic_temperature)
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
    from router.limits.memory import MemoryLimiter

    settings = app[SETTINGS]
    deja = settings.deja
    storage = app[STORAGE]
    app[AUTH] = Authenticator(master_key=settings.effective_master_key, lookup=storage.get_key_by_hash,
                              cache_ttl=deja.key_cache_ttl)
    metrics = app[METRICS]
    backend = deja.limits.backend
    if backend == "redis" or (backend == "auto" and deja.redis_url):
        from router.limits.redis_limiter import RedisLimiter

        if not deja.redis_url:
            from router.config import ConfigError

            raise ConfigError("deja.limits.backend: redis needs deja.redis_url")
        limiter: Any = RedisLimiter(deja.redis_url, prefix=redis_prefixes(deja.redis_prefix)["limits"],
                                    failure_mode=deja.limits.failure_mode, spend_loader=storage.key_spend_since,
                                    on_unavailable=metrics.limiter_unavailable.inc)
    else:
        limiter = MemoryLimiter(spend_loader=storage.key_spend_since)
    app[LIMITER] = limiter
    try:
        yield
    finally:
        await limiter.close()


async def redis_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """With ``redis_url`` set, ``/health/ready`` also asks Redis (cache and limits depend on it)."""
    url = app[SETTINGS].deja.redis_url
    if not url:
        yield
        return
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    async def redis_ping() -> bool:
        try:
            return bool(await client.ping())
        except Exception:  # any failure means "not ready"
            return False

    app[REDIS_PING] = redis_ping
    try:
        yield
    finally:
        await client.aclose()


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
