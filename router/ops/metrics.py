"""Prometheus metrics: one registry per app (so tests and several apps in a process stay apart).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), values are written to that directory and
``/metrics`` aggregates every worker's files through ``MultiProcessCollector``.
Label values are bounded: routes, model groups from the config, deployments, statuses, cache results; tenants
(on cost and token counters) up to ``metrics.max_tenants`` distinct values, later ones counted as ``other``;
tags only when allow-listed in ``metrics.tag_labels``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIMILARITY_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


OTHER_TENANTS = "other"


class Metrics:
    def __init__(self, *, max_tenants: int = 50, tag_labels: Iterable[str] = ()) -> None:
        self._max_tenants = max_tenants
        self._tenants: set[str] = set()
        self._tag_labels = frozenset(tag_labels)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("deja_requests", "Requests answered", ["route", "model", "status"], registry=r)
        self.duration = Histogram("deja_request_duration_seconds", "Request latency", ["route", "model", "cache"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("deja_time_to_first_token_seconds", "Time to the first streamed content",
                              ["model", "cache"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Counter("deja_upstream_requests", "Calls to provider deployments",
                                ["deployment", "status"], registry=r)
        self.upstream_duration = Histogram("deja_upstream_duration_seconds", "Provider call latency",
                                           ["deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_lookups = Counter("deja_cache_lookups", "Cache lookups by result", ["result"], registry=r)
        self.cache_entries = Gauge("deja_cache_entries", "Entries in the cache", registry=r,
                                   multiprocess_mode="max")
        self.cache_similarity = Histogram("deja_cache_similarity", "Best similarity per semantic lookup",
                                          buckets=SIMILARITY_BUCKETS, registry=r)
        self.cache_rejections = Counter("deja_cache_rejections", "Semantic lookups that served nothing, by reason",
                                        ["reason"], registry=r)
        self.cache_errors = Counter("deja_cache_errors", "Cache backend failures (request bypassed)", registry=r)
        self.tokens = Counter("deja_tokens", "Tokens", ["kind", "source", "model", "tenant"], registry=r)
        self.tokens_saved = Counter("deja_tokens_saved", "Prompt tokens not sent upstream", ["by"], registry=r)
        self.cost = Counter("deja_cost_usd", "Spend in USD", ["model", "tenant"], registry=r)
        self.tag_cost = Counter("deja_tag_cost_usd", "Spend in USD of requests carrying an allow-listed tag",
                                ["tag", "model"], registry=r)
        self.tag_requests = Counter("deja_tag_requests", "Requests carrying an allow-listed tag", ["tag", "model"],
                                    registry=r)
        self.cost_saved = Counter("deja_cost_saved_usd", "Spend avoided in USD", ["by"], registry=r)
        self.ratelimit_rejections = Counter("deja_ratelimit_rejections", "Requests refused by a limit",
                                            ["limit"], registry=r)
        self.limiter_unavailable = Counter("deja_ratelimit_backend_errors",
                                           "Rate-limit checks that could not reach Redis", registry=r)
        self.inflight = Gauge("deja_inflight_requests", "Requests in progress", registry=r,
                              multiprocess_mode="livesum")
        #: The same, in this process only (the gauge is summed across workers), for the request path to read.
        self.in_progress = 0
        self.usage_queue = Gauge("deja_usage_queue_depth", "Usage rows waiting to be written", registry=r,
                                 multiprocess_mode="livesum")
        self.usage_written = Counter("deja_usage_rows_written", "Usage rows written", registry=r)
        self.usage_errors = Counter("deja_usage_write_errors", "Failed usage batch writes", registry=r)
        self.skipped = Counter("deja_steps_skipped", "Request steps skipped: the input was too large for them",
                               ["step", "reason"], registry=r)
        self.body_budget = Counter("deja_body_budget_waits", "Large requests that waited for the in-flight "
                                   "body budget, by outcome (admitted, refused)", ["outcome"], registry=r)
        self.embedding_batch = Histogram("deja_embedding_batch_size", "Texts per embedding batch",
                                         buckets=BATCH_BUCKETS, registry=r)
        self.embedding_duration = Histogram("deja_embedding_duration_seconds", "Embedding batch time",
                                            buckets=LATENCY_BUCKETS, registry=r)

    def tenant_label(self, tenant: str) -> str:
        """``tenant`` while fewer than ``max_tenants`` distinct tenants were labelled, else ``other``."""
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) < self._max_tenants:
            self._tenants.add(tenant)
            return tenant
        return OTHER_TENANTS

    def observe_spend(self, *, model: str, tenant: str, cost_usd: float, tags: Iterable[str] = ()) -> None:
        """A request's cost by model and (bounded) tenant, and by each of its allow-listed tags."""
        self.cost.labels(model=model, tenant=self.tenant_label(tenant)).inc(cost_usd)
        for tag in self._tag_labels.intersection(tags):
            self.tag_cost.labels(tag=tag, model=model).inc(cost_usd)
            self.tag_requests.labels(tag=tag, model=model).inc()

    def observe_tokens(self, *, kind: str, source: str, model: str, tenant: str, count: int) -> None:
        self.tokens.labels(kind=kind, source=source, model=model, tenant=self.tenant_label(tenant)).inc(count)

    def on_embedding_batch(self, size: int, seconds: float) -> None:
        self.embedding_batch.observe(size)
        self.embedding_duration.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
