"""The app's one Redis client (one bounded connection pool), shared by the cache store, the limiter and the
readiness check. Each package keeps its own key names under its own key space (``cache.redis_store.Keys``,
``router.limits.redis_limiter``), below the deployment's ``deja.redis_prefix``; ``key_space`` joins the two."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

CACHE_SPACE = "cache:"
LIMITS_SPACE = "rl:"


def key_space(prefix: str, space: str) -> str:
    return f"{prefix}{space}"


def bounded_client(url: str, *, max_connections: int = 64, timeout: float = 0.5,
                   pool_timeout: float = 1.0) -> aioredis.Redis:
    """A client on a bounded pool: a burst queues for a connection (at most ``pool_timeout``) instead of opening
    hundreds at once, whose handshakes on a busy event loop would themselves hit ``timeout``; one immediate
    reconnect on a dropped connection. The cache store's stream reads block for less than ``timeout``."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    return aioredis.Redis.from_pool(pool)
