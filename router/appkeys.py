"""Every shared resource of the app, as a typed ``web.AppKey``. Each is created by a ``cleanup_ctx`` in
``router/resources.py`` (cleanup runs only if its start-up succeeded)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.config import Settings
from router.ops.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cache import SemanticCache
    from cache.embedder import Embedder
    from providers.gateway import Gateway
    from router.auth.keys import Authenticator
    from router.limits.memory import Limiter
    from router.ops.status import RecentErrors
    from router.storage import Storage, UsageWriter

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
EMBEDDER: web.AppKey[Embedder | None] = web.AppKey("embedder")
CACHE: web.AppKey[SemanticCache | None] = web.AppKey("cache")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter")
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
USAGE: web.AppKey[UsageWriter | None] = web.AppKey("usage")
BACKGROUND: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("background")  # post-response work, drained at shutdown
RECENT_ERRORS: web.AppKey[RecentErrors] = web.AppKey("recent_errors")
REDIS_PING: web.AppKey[Callable[[], Awaitable[bool]]] = web.AppKey("redis_ping")  # when Redis is configured


def spawn(app: web.Application, coro: Any) -> asyncio.Task[Any]:
    """Run post-response work (cache store, limiter settle) so a client going away cannot cancel it."""
    tasks: set[asyncio.Task[Any]] = app[BACKGROUND]
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
