"""Per-key rate limits and budgets (and budgets per tenant): ``MemoryLimiter`` (one process) and ``RedisLimiter``
(every replica); ``limit_policy`` turns ``limits.default_*`` and ``limits.tenant_budgets`` into a ``LimitPolicy``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from router.auth.keys import LimitPolicy
from router.limits.memory import Limiter, MemoryLimiter, SpendLoader

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from router.config import LimitsSettings


def limit_policy(settings: LimitsSettings) -> LimitPolicy:
    """What a virtual key gets when it sets no limits of its own, and the budget of each tenant."""
    return LimitPolicy(default_rpm=settings.default_rpm, default_tpm=settings.default_tpm,
                       default_budget_usd=settings.default_budget, default_budget_period=settings.default_budget_period,
                       tenant_budgets={t: (b.budget_usd, b.budget_period) for t, b in settings.tenant_budgets.items()})


def build_limiter(settings: LimitsSettings, *, redis: aioredis.Redis | None, prefix: str,
                  spend_loader: SpendLoader, on_unavailable: Callable[[], None],
                  tenant_spend_loader: SpendLoader | None = None) -> Limiter:
    """The limiter the settings ask for: Redis (shared by replicas) when a Redis client is given and the backend
    is ``auto`` or ``redis``, else in memory."""
    if settings.backend == "redis" or (settings.backend == "auto" and redis is not None):
        if redis is None:
            from router.config import ConfigError

            raise ConfigError("deja.limits.backend: redis needs deja.redis_url")
        from router.limits.redis_limiter import RedisLimiter

        return RedisLimiter(redis, prefix=prefix, failure_mode=settings.failure_mode, spend_loader=spend_loader,
                            tenant_spend_loader=tenant_spend_loader, on_unavailable=on_unavailable)
    return MemoryLimiter(spend_loader=spend_loader, tenant_spend_loader=tenant_spend_loader)
