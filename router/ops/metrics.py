"""Prometheus metrics: one registry per app (so tests and several apps in a process stay apart).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), values are written to that directory and
``/metrics`` aggregates every worker's files through ``MultiProcessCollector``.
Label values are bounded: routes, model groups from the config, deployments, statuses, cache results.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIMILARITY_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
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
        self.cache_errors = Counter("deja_cache_errors", "Cache backend failures (request bypassed)", registry=r)
        self.tokens = Counter("deja_tokens", "Tokens", ["kind", "source"], registry=r)
        self.tokens_saved = Counter("deja_tokens_saved", "Prompt tokens not sent upstream", ["by"], registry=r)
        self.cost = Counter("deja_cost_usd", "Spend in USD", registry=r)
        self.cost_saved = Counter("deja_cost_saved_usd", "Spend avoided in USD", ["by"], registry=r)
        self.ratelimit_rejections = Counter("deja_ratelimit_rejections", "Requests refused by a limit",
                                            ["limit"], registry=r)
        self.limiter_unavailable = Counter("deja_ratelimit_backend_errors",
                                           "Rate-limit checks that could not reach Redis", registry=r)
        self.inflight = Gauge("deja_inflight_requests", "Requests in progress", registry=r,
                              multiprocess_mode="livesum")
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

    def on_embedding_batch(self, size: int, seconds: float) -> None:
        self.embedding_batch.observe(size)
        self.embedding_duration.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
