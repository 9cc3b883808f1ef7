"""``/metrics`` (Prometheus text), ``/status.json`` (the figures of the status page) and the page itself at ``/``.

The status page is plain HTML (``router/ops/static/status.html``) that polls ``/status.json``: no build step.
"""

from __future__ import annotations

import collections
import time
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.appkeys import AUTH, CACHE, METRICS, RECENT_ERRORS, SETTINGS, USAGE
from router.http.errors import DejaError

_STARTED = time.time()
REDACTED = "(shown to the master key only)"


class RecentErrors:
    """The last few failed requests, for the status page (ids and messages, never prompts)."""

    def __init__(self, size: int = 20) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def add(self, request_id: str, status: int, message: str) -> None:
        self._items.appendleft({"ts": time.time(), "request_id": request_id, "status": status,
                                "message": message[:300]})

    def list(self, *, redacted: bool = False) -> list[dict[str, Any]]:
        """Every entry; ``redacted``: time and status only (ids and messages may be another tenant's)."""
        if redacted:
            return [{**item, "request_id": "-", "message": REDACTED} for item in self._items]
        return list(self._items)


def _samples(metrics: Any, name: str) -> list[tuple[dict[str, str], float, str]]:
    out = []
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append((sample.labels, sample.value, sample.name))
    return out


def _total(metrics: Any, name: str, **match: str) -> float:
    return sum(v for labels, v, _ in _samples(metrics, name) if all(labels.get(k) == m for k, m in match.items()))


def _quantile(metrics: Any, q: float) -> float | None:
    """Like PromQL's histogram_quantile: linear interpolation inside the bucket that holds the rank."""
    buckets: dict[float, float] = collections.defaultdict(float)
    for labels, value, _ in _samples(metrics, "deja_request_duration_seconds_bucket"):
        if labels.get("route") == "chat":
            buckets[float(labels["le"])] += value
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] == 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return None


async def status_json(request: web.Request) -> web.Response:
    await _guard(request)
    app = request.app
    m = app[METRICS]
    hits = _total(m, "deja_cache_lookups_total", result="exact") + _total(m, "deja_cache_lookups_total",
                                                                           result="semantic")
    lookups = _total(m, "deja_cache_lookups_total")
    cache = app.get(CACHE)
    entries = None
    if cache is not None:
        try:
            entries = (await cache.stats()).entries
        except Exception:
            entries = None
    writer = app.get(USAGE)
    body = {
        "uptime_seconds": round(time.time() - _STARTED, 1),
        "requests": int(_total(m, "deja_requests_total")),
        "errors": int(sum(v for labels, v, _ in _samples(m, "deja_requests_total")
                          if labels.get("status", "200")[0] in "45")),
        "cache_hits": int(hits), "cache_lookups": int(lookups),
        "hit_rate": (hits / lookups) if lookups else None,
        "tokens_saved": int(_total(m, "deja_tokens_saved_total")),
        "cost_usd": _total(m, "deja_cost_usd_total"),
        "cost_saved_usd": _total(m, "deja_cost_saved_usd_total"),
        "latency_p50_s": _quantile(m, 0.5), "latency_p95_s": _quantile(m, 0.95),
        "inflight": int(_total(m, "deja_inflight_requests")),
        "cache_entries": entries,
        "usage_queue_depth": writer.depth if writer is not None else None,
        "recent_errors": app[RECENT_ERRORS].list(redacted=not await _is_admin(request)),
    }
    return web.json_response(body)


async def _is_admin(request: web.Request) -> bool:
    """Recent errors name other tenants' requests: only the master key sees them (or everyone, on a deja
    without a master key, which binds to loopback only)."""
    auth = request.app[AUTH]
    if auth.open:
        return True
    try:
        return (await auth.authenticate(request.headers)).is_master
    except DejaError:
        return False


async def _guard(request: web.Request) -> None:
    if request.app[SETTINGS].deja.metrics.require_master_key:
        await request.app[AUTH].require_master(request.headers)


async def metrics_endpoint(request: web.Request) -> web.Response:
    await _guard(request)
    app = request.app
    cache = app.get(CACHE)
    if cache is not None:
        try:
            app[METRICS].cache_entries.set((await cache.stats()).entries)
        except Exception:
            pass
    writer = app.get(USAGE)
    if writer is not None:
        app[METRICS].usage_queue.set(writer.depth)
    return web.Response(body=app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def page(request: web.Request) -> web.Response:
    html = resources.files("router.ops").joinpath("static/status.html").read_text()
    return web.Response(text=html, content_type="text/html")


def add_routes(app: web.Application) -> None:
    if not app[SETTINGS].deja.metrics.enabled:
        return
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/", page)
    app.router.add_get("/dashboard", page)
