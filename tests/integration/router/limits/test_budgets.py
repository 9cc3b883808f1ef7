"""Budget periods and tenant budgets, with the same semantics in memory and in a real Redis (shared by
replicas); time is an injected clock, never slept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from router.auth.keys import Limits
from router.http.errors import BudgetExceededError
from router.limits.memory import MemoryLimiter
from router.limits.redis_limiter import RedisLimiter


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self, spend: float = 0.0) -> None:
        self.spend = spend
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, owner: str, period_start: float) -> float:
        self.calls.append((owner, period_start))
        return self.spend


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Limiters of one kind: every Redis one shares one prefix (replicas); memory ones share one instance."""
    made: list[Any] = []
    shared: dict[str, MemoryLimiter] = {}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"dejatest:{uuid.uuid4().hex[:12]}:"

    def build(**kwargs: Any) -> Any:
        if request.param == "memory":
            if "one" not in shared:
                shared["one"] = MemoryLimiter(**kwargs)
            return shared["one"]
        limiter = RedisLimiter(url, prefix=prefix, **kwargs)
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.close()
    if request.param == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def spend(limiter: Any, key: str, limits: Limits, usd: float) -> None:
    decision = await limiter.admit(key, limits, estimated_tokens=0)
    assert decision.allowed, decision
    await limiter.settle(key, limits, decision, actual_tokens=0, cost_usd=usd)


@pytest.mark.parametrize(("period", "start", "next_start"), [
    ("1h", ts(2026, 11, 30, 4), ts(2026, 11, 30, 5)),
    ("7d", ts(2026, 11, 30), ts(2026, 12, 7)),
    ("30d", (ts(2026, 11, 30) // (30 * 86400)) * 30 * 86400, (ts(2026, 11, 30) // (30 * 86400) + 1) * 30 * 86400),
])
async def test_a_budget_period_stops_the_key_then_resets(make: Callable[..., Any], period: str, start: float,
                                                        next_start: float) -> None:
    clock = Clock(ts(2026, 11, 30, 4, 45))
    loader = Loader(0.0)
    limiter = make(clock=clock, spend_loader=loader)
    limits = Limits(budget_usd=1.0, budget_period=period)
    await spend(limiter, "k", limits, 0.6)
    await spend(limiter, "k", limits, 0.6)
    denied = await limiter.admit("k", limits, estimated_tokens=0)
    assert (denied.limit, denied.retry_after) == ("budget", pytest.approx(next_start - clock.now))
    assert loader.calls == [("k", start)]
    clock.now = next_start
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    assert loader.calls[-1] == ("k", next_start)


async def test_a_tenant_budget_is_shared_by_its_keys_and_replicas(make: Callable[..., Any]) -> None:
    clock = Clock(ts(2026, 11, 30, 4, 45))
    tenant_loader = Loader(3.0)  # what the database says the tenant spent this month already
    a = make(clock=clock, tenant_spend_loader=tenant_loader)
    b_loader = Loader(0.0)
    b = make(clock=clock, tenant_spend_loader=b_loader)
    acme = Limits(rpm=1000, tenant="acme", tenant_budget_usd=5.0, tenant_budget_period="monthly")
    other = Limits(rpm=1000, tenant="globex", tenant_budget_usd=5.0, tenant_budget_period="monthly")
    await spend(a, "key_1", acme, 1.0)
    await spend(b, "key_2", acme, 1.5)  # 3 + 1 + 1.5 = 5.5: over, for every key of the tenant
    assert tenant_loader.calls == [("acme", ts(2026, 11, 1))]
    for limiter, key in ((a, "key_1"), (b, "key_3")):
        denied = await limiter.admit(key, acme, estimated_tokens=0)
        assert (denied.limit, denied.retry_after) == ("tenant_budget", ts(2026, 12, 1) - clock.now)
        with pytest.raises(BudgetExceededError, match="tenant"):
            denied.raise_for_denial()
    assert (await b.admit("key_4", other, estimated_tokens=0)).allowed  # another tenant is untouched
    if isinstance(b, RedisLimiter):  # b never seeded acme: a's counter was there (memory: a is b)
        assert b_loader.calls == [("globex", ts(2026, 11, 1))]
    clock.now = ts(2026, 12, 1)
    tenant_loader.spend = 0.0
    assert (await a.admit("key_1", acme, estimated_tokens=0)).allowed


async def test_key_and_tenant_budgets_together(make: Callable[..., Any]) -> None:
    limiter = make(clock=Clock(ts(2026, 11, 30, 4, 45)))
    limits = Limits(budget_usd=1.0, budget_period="1d", tenant="acme", tenant_budget_usd=10.0,
                    tenant_budget_period="1d")
    await spend(limiter, "key_1", limits, 1.0)
    assert (await limiter.admit("key_1", limits, estimated_tokens=0)).limit == "budget"
    assert (await limiter.admit("key_2", limits, estimated_tokens=0)).allowed
