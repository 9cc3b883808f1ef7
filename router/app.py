"""The one app factory, ``create_app(settings)``, used by ``deja serve``, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from typing import Any

from aiohttp import web

from cache.blas import pin_single_thread
from providers.interface import Provider
from router.appkeys import DB_SCHEMA, EMBEDDER_OVERRIDE, METRICS, PROVIDER_OVERRIDE, RECENT_ERRORS, SETTINGS
from router.config import ConfigError, Settings
from router.http import admin, cors
from router.http import openai as openai_routes
from router.http.inflight import freeze_startup_objects, inflight_middleware, limit_malloc_arenas, make_budget
from router.http.middleware import request_middleware
from router.http.wire import DejaRunner
from router.ops import status
from router.ops.metrics import Metrics
from router.ops.shutdown import Shutdown
from router.pipeline import chat, completions, responses
from router.resources import (
    background_ctx,
    cache_ctx,
    limits_ctx,
    pipeline_ctx,
    provider_ctx,
    redis_ctx,
    storage_ctx,
)

log = logging.getLogger("deja")
DRAIN_SECONDS = 30.0  # in-flight requests get this long after SIGTERM; the process is gone 5 s later at most


def create_app(settings: Settings, *, embedder: Any = None, db_schema: str | None = None,
               provider: Provider | None = None) -> web.Application:
    """Build the app. ``embedder`` shares an already loaded embedder; ``db_schema`` picks a PostgreSQL schema;
    ``provider`` replaces LiteLLM's Router by an in-process ``Provider`` (the pipeline's unit tests)."""
    max_body = settings.deja.max_body_bytes
    app = web.Application(client_max_size=max_body, middlewares=[request_middleware, inflight_middleware(max_body)])
    make_budget(app, settings.deja.inflight_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(max_tenants=settings.deja.metrics.max_tenants, tag_labels=settings.deja.metrics.tag_labels)
    app[RECENT_ERRORS] = status.RecentErrors()
    if embedder is not None:
        app[EMBEDDER_OVERRIDE] = embedder
    if db_schema is not None:
        app[DB_SCHEMA] = db_schema
    if provider is not None:
        app[PROVIDER_OVERRIDE] = provider
    app.cleanup_ctx.extend([storage_ctx, provider_ctx, redis_ctx, cache_ctx, limits_ctx, background_ctx,
                            pipeline_ctx])
    r = app.router
    r.add_post("/v1/chat/completions", chat.chat_completions)
    r.add_post("/chat/completions", chat.chat_completions)
    r.add_post("/v1/responses", responses.responses)
    r.add_post("/responses", responses.responses)
    r.add_post("/v1/completions", completions.completions)
    r.add_post("/completions", completions.completions)
    r.add_post("/v1/embeddings", openai_routes.embeddings)
    r.add_post("/embeddings", openai_routes.embeddings)
    r.add_get("/v1/models", openai_routes.list_models)
    r.add_get("/v1/models/{model:.+}", openai_routes.get_model)
    r.add_get("/health/live", openai_routes.live)
    r.add_get("/health/ready", openai_routes.ready)
    r.add_get("/health/deployments", openai_routes.deployments)
    admin.add_routes(app)
    status.add_routes(app)
    cors.setup(app, settings.deja.cors)
    return app


def check_bind(settings: Settings, host: str) -> None:
    """Without a master key deja is open: only loopback, unless ``allow_open_bind`` says otherwise."""
    if settings.effective_master_key:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.deja.allow_open_bind:
        raise ConfigError(f"deja.host: binding to {host} without a master key would open the gateway to "
                          "everyone; set deja.master_key (or DEJA_MASTER_KEY), or deja.allow_open_bind: true")


def run_server(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """``serve`` on uvloop (``deja.event_loop: uvloop``, the default: about a third less CPU per request than
    asyncio's own loop here) or on asyncio's loop."""
    factory = None
    if settings.deja.event_loop == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # a platform without uvloop (Windows): asyncio's loop works the same, only slower
            log.warning("uvloop is not installed; using asyncio's event loop")
    limit_malloc_arenas()  # before any thread starts: a burst's freed memory is not kept in per-thread arenas
    pin_single_thread()  # the index's products run on the event loop: BLAS on one thread, without a switch per search
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(settings, host, port, reuse_port=reuse_port))


async def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, finish in-flight requests and drain the usage queue."""
    check_bind(settings, host)
    # Signals first: a SIGTERM while start-up runs (connecting storage, loading models) lets start-up finish,
    # then shuts down cleanly, instead of killing the process half-initialised.
    # router.ops.shutdown: past the drain time (+5 s) after the signal, the process exits anyway.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    shutdown = Shutdown(loop, stop, DRAIN_SECONDS)
    shutdown.install()
    log.info("deja starting (pid %d, %s event loop)", os.getpid(), type(loop).__module__.split(".")[0])
    app = create_app(settings)
    runner = DejaRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=DRAIN_SECONDS)
    await runner.setup()
    freeze_startup_objects()
    try:
        if not stop.is_set():
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
            await site.start()
            if settings.effective_master_key:
                log.info("deja listening on http://%s:%s (virtual keys required)", host, port)
            else:
                log.warning("deja listening on http://%s:%s OPEN: no master key configured, no authentication",
                            host, port)
            await stop.wait()
    finally:
        log.info("deja shutting down: finishing requests and draining the usage queue")
        await runner.cleanup()
        shutdown.finished()
