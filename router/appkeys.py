"""Every shared resource of the app, as a typed ``web.AppKey``, declared here and nowhere else. Each is created by
a ``cleanup_ctx`` in ``router/resources.py`` (cleanup runs only if its start-up succeeded)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.config import Settings
from router.ops.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis.asyncio as aioredis

    from cache import SemanticCache
    from cache.embedder import Embedder
    from providers.interface import Provider
    from router.auth.keys import Authenticator
    from router.limits.memory import Limiter
    from router.ops.status import RecentErrors
    from router.pipeline.context import Context
    from router.storage import Storage, UsageWriter
    from router.storage.spend import KeySpend

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
PROVIDER: web.AppKey[Provider] = web.AppKey("provider")
EMBEDDER: web.AppKey[Embedder | None] = web.AppKey("embedder")
CACHE: web.AppKey[SemanticCache | None] = web.AppKey("cache")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter")
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
USAGE: web.AppKey[UsageWriter | None] = web.AppKey("usage")
BACKGROUND: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("background")  # post-response work, drained at shutdown
RECENT_ERRORS: web.AppKey[RecentErrors] = web.AppKey("recent_errors")
REDIS: web.AppKey[aioredis.Redis | None] = web.AppKey("redis")  # the one shared client, when configured
REDIS_PING: web.AppKey[Callable[[], Awaitable[bool]]] = web.AppKey("redis_ping")  # when Redis is configured
PROVIDER_OVERRIDE: web.AppKey[Provider] = web.AppKey("provider_override")  # an in-process provider (tests)
EMBEDDER_OVERRIDE = web.AppKey("embedder_override", object)  # a ready Embedder to share (tests, benchmarks)
DB_SCHEMA = web.AppKey("db_schema", str)  # PostgreSQL schema to use (tests isolate themselves with it)
KEY_SPEND: web.AppKey[KeySpend] = web.AppKey("key_spend")  # a key's spend so far, for the answer's headers
CONTEXT: web.AppKey[Context] = web.AppKey("pipeline_context")  # the typed resources the request steps use

