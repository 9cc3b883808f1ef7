"""Per-key rate limits and budgets: ``MemoryLimiter`` (one process) and ``RedisLimiter`` (every replica)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from router.limits.memory import Limiter, MemoryLimiter, SpendLoader

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from router.config import LimitsSettings


def build_limiter(settings: LimitsSettings, *, redis: aioredis.Redis | None, prefix: str,
                  spend_loader: SpendLoader, on_unavailable: Callable[[], None]) -> Limiter:
    """The limiter the settings ask for: Redis (shared by replicas) when a Redis client is given and the backend
    is ``auto`` or ``redis``, else in memory."""
    if settings.backend == "redis" or (settings.backend == "auto" and redis is not None):
        if redis is None:
            from router.config import ConfigError

            raise ConfigError("deja.limits.backend: redis needs deja.redis_url")
        from router.limits.redis_limiter import RedisLimiter

        return RedisLimiter(redis, prefix=prefix, failure_mode=settings.failure_mode, spend_loader=spend_loader,
                            on_unavailable=on_unavailable)
    return MemoryLimiter(spend_loader=spend_loader)
