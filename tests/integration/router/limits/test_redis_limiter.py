"""RedisLimiter on a real Redis: one limit shared by several limiters (replicas), failures, spend."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from router.auth.keys import Limits
from router.http.errors import ServiceUnavailableError
from router.limits.memory import Decision
from router.limits.redis_limiter import RedisLimiter
from tests.integration.harness import RedisServer, free_port

T0 = 1_700_000_000.0
IN_CI = os.environ.get("CI", "").lower() == "true"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SpendLoader:
    def __init__(self, spend: float = 0.0) -> None:
        self.spend = spend
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, key_id: str, period_start: float) -> float:
        self.calls.append((key_id, period_start))
        return self.spend


@pytest.fixture
async def make_limiter(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[..., RedisLimiter]]:
    made: list[RedisLimiter] = []

    def make(url: str | None = None, **kwargs: object) -> RedisLimiter:
        limiter = RedisLimiter(url or redis_url, prefix=redis_prefix, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()




async def _until_allowed(limiter: RedisLimiter, limits: Limits) -> Decision:
    deadline = time.monotonic() + 10
    while True:
        decision = await limiter.admit("k", limits, estimated_tokens=0)
        if decision.allowed or time.monotonic() > deadline:
            return decision
        await asyncio.sleep(0.05)


async def test_two_replicas_share_one_5_rpm_limit(make_limiter: Callable[..., RedisLimiter]) -> None:
    a, b = make_limiter(), make_limiter()
    limits = Limits(rpm=5)
    attempts = [limiter.admit("k", limits, estimated_tokens=10) for limiter in (a, b) for _ in range(5)]
    decisions = await asyncio.gather(*attempts)
    assert sum(d.allowed for d in decisions) == 5
    denied = [d for d in decisions if not d.allowed]
    assert all(d.limit == "requests" and 0 < d.retry_after <= 60 for d in denied), denied


async def test_200_concurrent_admits_across_3_limiters_admit_exactly_50(
    make_limiter: Callable[..., RedisLimiter],
) -> None:
    limiters = [make_limiter() for _ in range(3)]
    limits = Limits(rpm=50, tpm=10**6)
    decisions = await asyncio.gather(
        *(limiters[i % 3].admit("k", limits, estimated_tokens=100) for i in range(200))
    )
    assert sum(d.allowed for d in decisions) == 50
    denied = [d for d in decisions if not d.allowed]
    assert {d.limit for d in denied} == {"requests"}
    assert {d.headers["x-ratelimit-remaining-requests"] for d in denied} == {"0"}


async def test_window_slides_with_the_injected_clock(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = Clock()
    a, b = make_limiter(clock=clock), make_limiter(clock=clock)
    limits = Limits(rpm=5)
    for i in range(5):
        clock.now = T0 + 2 * i
        assert (await (a if i % 2 else b).admit("k", limits, estimated_tokens=0)).allowed
    clock.now = T0 + 10
    denied = await a.admit("k", limits, estimated_tokens=0)
    assert (denied.limit, denied.retry_after) == ("requests", 50.0)
    assert denied.headers["x-ratelimit-reset-requests"] == "50s"
    clock.now = T0 + 60
    assert (await b.admit("k", limits, estimated_tokens=0)).allowed
    assert (await a.admit("k", limits, estimated_tokens=0)).retry_after == 2.0


async def test_tpm_reservation_is_corrected_by_any_replica(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = Clock()
    a, b = make_limiter(clock=clock), make_limiter(clock=clock)
    limits = Limits(tpm=1000)
    first = await a.admit("k", limits, estimated_tokens=600)
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    clock.now = T0 + 5
    denied = await b.admit("k", limits, estimated_tokens=500)
    assert (denied.limit, denied.retry_after) == ("tokens", 55.0)
    await b.settle("k", limits, first, actual_tokens=200, cost_usd=0.0)
    second = await b.admit("k", limits, estimated_tokens=500)
    assert second.allowed and second.headers["x-ratelimit-remaining-tokens"] == "300"
    await a.settle("k", limits, second, actual_tokens=900, cost_usd=0.0)
    clock.now = T0 + 10
    over = await a.admit("k", limits, estimated_tokens=1)
    assert (over.limit, over.retry_after) == ("tokens", 50.0)
    too_big = await a.admit("k", limits, estimated_tokens=1001)
    assert (too_big.limit, too_big.retry_after) == ("tokens", None)
    clock.now = T0 + 60
    assert (await b.admit("k", limits, estimated_tokens=1)).allowed


async def test_spend_is_seeded_from_the_loader_and_shared(make_limiter: Callable[..., RedisLimiter]) -> None:
    clock = Clock(datetime(2025, 3, 10, 23, 0, tzinfo=UTC).timestamp())
    day = datetime(2025, 3, 10, tzinfo=UTC).timestamp()
    loader_a, loader_b = SpendLoader(4.5), SpendLoader(999.0)
    a = make_limiter(clock=clock, spend_loader=loader_a)
    b = make_limiter(clock=clock, spend_loader=loader_b)
    limits = Limits(budget_usd=5.0, budget_period="daily")

    decision = await a.admit("k", limits, estimated_tokens=0)
    assert decision.allowed and loader_a.calls == [("k", day)]
    assert (await b.admit("k", limits, estimated_tokens=0)).allowed  # the counter exists: no second seed
    assert loader_b.calls == []
    await b.settle("k", limits, decision, actual_tokens=0, cost_usd=0.5)
    stopped = await a.admit("k", limits, estimated_tokens=0)
    assert (stopped.limit, stopped.retry_after) == ("budget", 3600.0)

    clock.now += 3600  # next UTC day: a new counter, seeded again
    loader_b.spend = 0.25
    assert (await b.admit("k", limits, estimated_tokens=0)).allowed
    assert loader_b.calls == [("k", day + 86400)]


async def test_failing_spend_loader_follows_the_failure_mode(
    make_limiter: Callable[..., RedisLimiter],
) -> None:
    async def broken(key_id: str, period_start: float) -> float:
        raise OSError("database down")

    calls: list[int] = []
    closed = make_limiter(spend_loader=broken, on_unavailable=lambda: calls.append(1))
    assert (await closed.admit("k", Limits(budget_usd=1.0), estimated_tokens=0)).limit == "unavailable"
    assert calls == [1]


async def test_keys_without_limits_skip_redis(make_limiter: Callable[..., RedisLimiter]) -> None:
    calls: list[int] = []
    unreachable = make_limiter(f"redis://127.0.0.1:{free_port()}/0", on_unavailable=lambda: calls.append(1))
    decision = await unreachable.admit("k", Limits(), estimated_tokens=100)
    await unreachable.settle("k", Limits(), decision, actual_tokens=100, cost_usd=1.0)
    assert decision.allowed and calls == []


async def test_redis_time_mode_enforces_the_limit(make_limiter: Callable[..., RedisLimiter]) -> None:
    a, b = make_limiter(clock=None), make_limiter(clock=None)
    limits = Limits(rpm=2)
    decisions = [await limiter.admit("k", limits, estimated_tokens=0) for limiter in (a, b, a)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 58 < decisions[2].retry_after <= 60


async def test_redis_down_closed_denies_open_admits_and_recovers(
    redis_server: RedisServer, make_limiter: Callable[..., RedisLimiter]
) -> None:
    outages: list[str] = []
    closed = make_limiter(redis_server.url, on_unavailable=lambda: outages.append("closed"))
    opened = make_limiter(redis_server.url, failure_mode="open", on_unavailable=lambda: outages.append("open"))
    limits = Limits(rpm=100, tpm=10_000, budget_usd=10.0)
    assert (await closed.admit("k", limits, estimated_tokens=10)).allowed
    admitted = await opened.admit("k", limits, estimated_tokens=10)
    assert admitted.allowed

    redis_server.kill()
    denied = await closed.admit("k", limits, estimated_tokens=10)
    assert (denied.allowed, denied.limit) == (False, "unavailable")
    with pytest.raises(ServiceUnavailableError) as info:
        denied.raise_for_denial()
    assert info.value.status == 503
    fail_open = await opened.admit("k", limits, estimated_tokens=10)
    assert fail_open.allowed and fail_open.headers == {}
    await opened.settle(
        "k", limits, admitted, actual_tokens=5, cost_usd=0.1
    )  # logged and counted, not raised
    assert outages == ["closed", "open", "open"]

    redis_server.start()
    assert (await _until_allowed(closed, limits)).allowed
    assert (await _until_allowed(opened, limits)).allowed


async def test_unresponsive_redis_times_out_instead_of_hanging(
    redis_server: RedisServer, make_limiter: Callable[..., RedisLimiter]
) -> None:
    outages: list[int] = []
    limiter = make_limiter(redis_server.url, on_unavailable=lambda: outages.append(1))
    limits = Limits(rpm=10)
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    redis_server.pause()
    try:
        decision = await asyncio.wait_for(limiter.admit("k", limits, estimated_tokens=0), timeout=10)
    finally:
        redis_server.resume()
    assert decision.limit == "unavailable" and outages == [1]
    assert (await _until_allowed(limiter, limits)).allowed


async def test_limiter_keys_stay_under_the_prefix(
    make_limiter: Callable[..., RedisLimiter], redis_url: str, redis_prefix: str
) -> None:
    limiter = make_limiter()
    limits = Limits(rpm=5, tpm=100, budget_usd=1.0, budget_period="monthly")
    decision = await limiter.admit("key-1", limits, estimated_tokens=10)
    await limiter.settle("key-1", limits, decision, actual_tokens=10, cost_usd=0.01)
    client = aioredis.from_url(redis_url)
    try:
        keys = sorted([k.decode() async for k in client.scan_iter(match=redis_prefix + "*")])
        spend_key = next(k for k in keys if ":spend:" in k)
        assert float(await client.get(spend_key)) == pytest.approx(0.01)
        assert 0 < await client.ttl(spend_key) <= 32 * 86400
    finally:
        await client.aclose()
    assert len(keys) == 4 and all(k.startswith(redis_prefix + "rl:{key-1}:") for k in keys)
