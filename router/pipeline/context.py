"""``Context``: the app's resources that the request steps use, typed, looked up once per app (not per request)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.appkeys import AUTH, BACKGROUND, CACHE, EMBEDDER, KEY_SPEND, LIMITER, METRICS, PROVIDER, SETTINGS, USAGE

if TYPE_CHECKING:
    from cache import SemanticCache
    from cache.embedder import Embedder
    from providers.interface import Provider
    from router.auth.keys import Authenticator
    from router.config import DejaSettings
    from router.limits.memory import Limiter
    from router.ops.metrics import Metrics
    from router.storage import UsageWriter
    from router.storage.spend import KeySpend


@dataclass(frozen=True)
class Context:
    settings: DejaSettings
    provider: Provider
    auth: Authenticator
    limiter: Limiter
    metrics: Metrics
    cache: SemanticCache | None
    embedder: Embedder | None
    usage: UsageWriter | None
    background: set[asyncio.Task[Any]]
    spend: KeySpend | None = None  # a key's spend so far (the answer's x-litellm-key-spend)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run post-response work (cache store, limiter settle) so a client going away cannot cancel it; the
        app drains these tasks at shutdown."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task




def build_context(app: web.Application) -> Context:
    """Called once at start-up, after every resource is built (``router.resources.pipeline_ctx``)."""
    return Context(settings=app[SETTINGS].deja, provider=app[PROVIDER], auth=app[AUTH], limiter=app[LIMITER],
                   metrics=app[METRICS], cache=app.get(CACHE), embedder=app.get(EMBEDDER), usage=app.get(USAGE),
                   background=app[BACKGROUND], spend=app.get(KEY_SPEND))
