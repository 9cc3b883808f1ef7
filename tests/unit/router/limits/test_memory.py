"""MemoryLimiter semantics with an injected clock: sliding windows, TPM correction, budgets, headers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from router.auth.keys import Limits
from router.http.errors import BudgetExceededError, RateLimitError, ServiceUnavailableError
from router.limits.memory import ALLOWED, Decision, MemoryLimiter, format_duration, period_bounds

T0 = 1_700_000_000.0


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


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


async def test_five_rpm_admits_exactly_five_then_denies_until_the_window_slides() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    limits = Limits(rpm=5)
    admitted = []
    for i in range(5):
        clock.now = T0 + 2 * i
        admitted.append((await limiter.admit("k", limits, estimated_tokens=10)).allowed)
    assert admitted == [True] * 5

    clock.now = T0 + 10
    denied = await limiter.admit("k", limits, estimated_tokens=10)
    assert (denied.allowed, denied.limit, denied.retry_after, denied.reservation) == (
        False,
        "requests",
        50.0,
        None,
    )
    with pytest.raises(RateLimitError) as info:
        denied.raise_for_denial()
    assert info.value.status == 429
    assert info.value.headers["Retry-After"] == "50"
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert "try again in 50s" in info.value.message

    clock.now = T0 + 59.5  # the oldest request still counts: Retry-After rounds 0.5 s up to 1
    late = await limiter.admit("k", limits, estimated_tokens=10)
    assert (late.allowed, late.retry_after) == (False, 0.5)
    with pytest.raises(RateLimitError) as info:
        late.raise_for_denial()
    assert info.value.headers["Retry-After"] == "1"

    clock.now = T0 + 60  # the first request left the window: exactly one slot
    assert (await limiter.admit("k", limits, estimated_tokens=10)).allowed
    again = await limiter.admit("k", limits, estimated_tokens=10)
    assert (again.allowed, again.retry_after) == (False, 2.0)


async def test_denied_attempts_are_not_counted() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    limits = Limits(rpm=1)
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    for _ in range(10):
        clock.now += 1
        assert not (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    clock.now = T0 + 60
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed


async def test_keys_are_limited_independently() -> None:
    limiter = MemoryLimiter(clock=Clock())
    limits = Limits(rpm=1)
    assert (await limiter.admit("a", limits, estimated_tokens=0)).allowed
    assert (await limiter.admit("b", limits, estimated_tokens=0)).allowed
    assert not (await limiter.admit("a", limits, estimated_tokens=0)).allowed


async def test_headers_report_limits_remaining_and_reset() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    limits = Limits(rpm=5, tpm=1000)
    await limiter.admit("k", limits, estimated_tokens=100)
    clock.now = T0 + 2
    decision = await limiter.admit("k", limits, estimated_tokens=150)
    assert decision.headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "58s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",
        "x-ratelimit-reset-tokens": "58s",
    }
    only_rpm = await limiter.admit("other", Limits(rpm=3), estimated_tokens=10)
    assert set(only_rpm.headers) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_format_duration_matches_openai(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


async def test_tpm_admits_on_estimate_and_settle_corrects_it() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    limits = Limits(tpm=1000)
    first = await limiter.admit("k", limits, estimated_tokens=600)
    assert first.allowed and first.headers["x-ratelimit-remaining-tokens"] == "400"
    clock.now = T0 + 5
    too_much = await limiter.admit("k", limits, estimated_tokens=500)
    assert (too_much.allowed, too_much.limit, too_much.retry_after) == (False, "tokens", 55.0)

    await limiter.settle("k", limits, first, actual_tokens=200, cost_usd=0.0)  # frees 400 tokens
    second = await limiter.admit("k", limits, estimated_tokens=500)
    assert second.allowed and second.headers["x-ratelimit-remaining-tokens"] == "300"

    await limiter.settle("k", limits, second, actual_tokens=900, cost_usd=0.0)  # consumes 400 more
    clock.now = T0 + 10
    over = await limiter.admit("k", limits, estimated_tokens=1)
    assert (over.allowed, over.limit) == (False, "tokens")
    assert over.retry_after == 50.0  # when the first (200-token) reservation leaves, 1 token fits
    assert over.headers["x-ratelimit-remaining-tokens"] == "0"

    clock.now = T0 + 60
    assert (await limiter.admit("k", limits, estimated_tokens=1)).allowed


async def test_request_larger_than_the_tpm_limit_never_fits() -> None:
    limiter = MemoryLimiter(clock=Clock())
    decision = await limiter.admit("k", Limits(tpm=100), estimated_tokens=101)
    assert (decision.allowed, decision.limit, decision.retry_after) == (False, "tokens", None)
    with pytest.raises(RateLimitError) as info:
        decision.raise_for_denial()
    assert "Request too large" in info.value.message
    assert "Retry-After" not in info.value.headers


async def test_cache_hit_counts_as_a_request_but_costs_nothing() -> None:
    clock = Clock()
    loader = SpendLoader(0.0)
    limiter = MemoryLimiter(clock=clock, spend_loader=loader)
    limits = Limits(rpm=2, tpm=100, budget_usd=0.01)
    hit = await limiter.admit("k", limits, estimated_tokens=80)
    await limiter.settle("k", limits, hit, actual_tokens=0, cost_usd=0.0)
    nxt = await limiter.admit("k", limits, estimated_tokens=100)  # the hit's tokens were given back
    assert nxt.allowed
    assert nxt.headers["x-ratelimit-remaining-requests"] == "0"
    third = await limiter.admit("k", limits, estimated_tokens=0)
    assert third.limit == "requests"


async def test_daily_budget_stops_the_key_and_resets_next_day() -> None:
    clock = Clock(ts(2025, 3, 10, 23, 0))
    loader = SpendLoader(0.5)
    limiter = MemoryLimiter(clock=clock, spend_loader=loader)
    limits = Limits(budget_usd=1.0, budget_period="daily")
    for _ in range(2):
        decision = await limiter.admit("k", limits, estimated_tokens=10)
        assert decision.allowed
        await limiter.settle("k", limits, decision, actual_tokens=10, cost_usd=0.3)
    assert loader.calls == [("k", ts(2025, 3, 10))]  # seeded once per period
    stopped = await limiter.admit("k", limits, estimated_tokens=10)
    assert (stopped.allowed, stopped.limit, stopped.retry_after) == (False, "budget", 3600.0)
    with pytest.raises(BudgetExceededError) as info:
        stopped.raise_for_denial()
    assert (info.value.status, info.value.code, info.value.headers["Retry-After"]) == (
        429,
        "insufficient_quota",
        "3600",
    )

    loader.spend = 0.0
    clock.now = ts(2025, 3, 11, 0, 0, 1)
    assert (await limiter.admit("k", limits, estimated_tokens=10)).allowed
    assert loader.calls[-1] == ("k", ts(2025, 3, 11))


async def test_budget_is_reached_exactly_at_the_limit() -> None:
    limiter = MemoryLimiter(clock=Clock(), spend_loader=SpendLoader(0.0))
    limits = Limits(budget_usd=1.0)
    decision = await limiter.admit("k", limits, estimated_tokens=0)
    await limiter.settle("k", limits, decision, actual_tokens=0, cost_usd=0.9999)
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    await limiter.settle("k", limits, decision, actual_tokens=0, cost_usd=0.0001)
    assert (await limiter.admit("k", limits, estimated_tokens=0)).limit == "budget"


async def test_monthly_budget_resets_at_the_new_month() -> None:
    clock = Clock(ts(2025, 12, 31, 12, 0))
    loader = SpendLoader(5.0)
    limiter = MemoryLimiter(clock=clock, spend_loader=loader)
    limits = Limits(budget_usd=5.0, budget_period="monthly")
    stopped = await limiter.admit("k", limits, estimated_tokens=0)
    assert (stopped.limit, stopped.retry_after) == ("budget", 12 * 3600.0)
    assert loader.calls == [("k", ts(2025, 12, 1))]
    clock.now = ts(2026, 1, 15)
    assert (
        await limiter.admit("k", limits, estimated_tokens=0)
    ).limit == "budget"  # the loader still says 5.0
    loader.spend = 0.0
    clock.now = ts(2026, 2, 1)
    assert (await limiter.admit("k", limits, estimated_tokens=0)).allowed
    assert loader.calls[-1] == ("k", ts(2026, 2, 1))


async def test_lifetime_budget_has_no_retry_after() -> None:
    loader = SpendLoader(2.0)
    limiter = MemoryLimiter(clock=Clock(), spend_loader=loader)
    decision = await limiter.admit("k", Limits(budget_usd=2.0), estimated_tokens=0)
    assert (decision.limit, decision.retry_after) == ("budget", None)
    assert loader.calls == [("k", 0.0)]


async def test_failing_spend_loader_denies_as_unavailable() -> None:
    async def broken(key_id: str, period_start: float) -> float:
        raise OSError("database down")

    limiter = MemoryLimiter(clock=Clock(), spend_loader=broken)
    decision = await limiter.admit("k", Limits(budget_usd=1.0), estimated_tokens=0)
    assert decision.limit == "unavailable"


def test_period_bounds() -> None:
    now = ts(2024, 2, 29, 13, 45)
    assert period_bounds("daily", now) == (ts(2024, 2, 29), ts(2024, 3, 1))
    assert period_bounds("monthly", now) == (ts(2024, 2, 1), ts(2024, 3, 1))
    assert period_bounds(None, now) == (0.0, None)
    with pytest.raises(ValueError):
        Limits(budget_usd=1.0, budget_period="weekly")


async def test_keys_without_limits_are_always_admitted_and_never_loaded() -> None:
    loader = SpendLoader()
    limiter = MemoryLimiter(clock=Clock(), spend_loader=loader)
    decisions = [await limiter.admit("k", Limits(), estimated_tokens=10**9) for _ in range(100)]
    assert all(d is ALLOWED for d in decisions)
    assert decisions[0].headers == {} and loader.calls == []


async def test_concurrent_admits_respect_the_limit() -> None:
    class SlowLoader(SpendLoader):
        async def __call__(self, key_id: str, period_start: float) -> float:
            await asyncio.sleep(0)
            return await super().__call__(key_id, period_start)

    limiter = MemoryLimiter(clock=Clock(), spend_loader=SlowLoader())
    limits = Limits(rpm=5, budget_usd=10.0)
    decisions = await asyncio.gather(*(limiter.admit("k", limits, estimated_tokens=1) for _ in range(20)))
    assert sum(d.allowed for d in decisions) == 5


def test_unavailable_decision_raises_503_with_retry_after() -> None:
    decision = Decision(allowed=False, limit="unavailable", retry_after=1.0, headers={}, reservation=None)
    with pytest.raises(ServiceUnavailableError) as info:
        decision.raise_for_denial()
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
    ALLOWED.raise_for_denial()  # admitted: nothing raised
