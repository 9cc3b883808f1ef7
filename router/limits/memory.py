"""Per-key rate limits (requests and tokens per minute) and spend budgets.

Semantics shared by ``MemoryLimiter`` (one process) and ``router.limits.redis_limiter.RedisLimiter`` (N replicas):

- Sliding 60 s windows: an event admitted at ``t`` counts until ``t + 60 s``, so "5 RPM" means at most 5 in
  any 60 s. ``retry_after`` is the time until enough counted events leave the window.
- Tokens per minute: ``admit`` reserves ``estimated_tokens`` (prompt tokens plus ``max_tokens`` or a default)
  if ``used + estimate <= tpm``; ``settle`` corrects that reservation to the real usage. A request larger than
  the whole TPM limit is denied with ``retry_after=None``.
- Budgets: a key is denied once its spend in the current period reaches ``budget_usd``; ``settle`` adds the
  request's real cost. Periods are fixed UTC windows: ``1h`` (from the hour), ``1d``/``daily`` (from midnight),
  ``7d`` (from Monday 00:00), ``30d`` (30-day windows counted from the Unix epoch), ``monthly`` (from the 1st),
  or lifetime when no period. Each period's spend is seeded, when absent, from
  ``spend_loader(key_id, period_start)`` (the database's record).
- Tenant budgets (``Limits.tenant_budget_usd``): the same, for the spend of every key of the tenant together,
  seeded from ``tenant_spend_loader(tenant, period_start)``; checked before the key's own limits.
- Cache hits count as requests but cost nothing: settle them with ``actual_tokens=0, cost_usd=0``.
- Keys without limits never touch any state: ``admit`` returns a shared "allowed" decision.

Call ``settle`` once for every admitted decision (also for failed upstream calls, with what they consumed).
Headers follow OpenAI's ``x-ratelimit-*`` names; ``reset-*`` is the time until ``remaining`` next grows.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from router.auth.keys import Limits
from router.http.errors import BudgetExceededError, RateLimitError, ServiceUnavailableError

log = logging.getLogger(__name__)

WINDOW_MS = 60_000
SpendLoader = Callable[[str, float], Awaitable[float]]
_reservation_ids = itertools.count(1)
_INSTANCE = os.urandom(4).hex()


def new_reservation_id() -> str:
    """Unique across replicas (random per process) and within one (a counter)."""
    return f"{_INSTANCE}-{next(_reservation_ids)}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: str | None  # None | "requests" | "tokens" | "budget" | "tenant_budget" | "unavailable"
    retry_after: float | None
    headers: dict[str, str]
    reservation: str | None
    detail: str = field(default="", compare=False)

    def raise_for_denial(self) -> None:
        """Nothing when allowed; else the matching 429/503 with the rate-limit headers (and Retry-After)."""
        if self.allowed:
            return
        wait = f" Please try again in {format_duration(self.retry_after)}." if self.retry_after else ""
        if self.limit in ("budget", "tenant_budget"):
            whose = "This key's tenant has" if self.limit == "tenant_budget" else "This key has"
            raise BudgetExceededError(
                f"{whose} reached its spend budget." + wait,
                retry_after=self.retry_after,
                headers=self.headers,
            )
        if self.limit == "unavailable":
            headers = {**self.headers, "Retry-After": str(max(1, math.ceil(self.retry_after or 1)))}
            raise ServiceUnavailableError("Rate limiting is temporarily unavailable.", headers=headers)
        what = "tokens" if self.limit == "tokens" else "requests"
        message = self.detail or f"Rate limit reached for {what} per minute."
        raise RateLimitError(message + wait, retry_after=self.retry_after, headers=self.headers)


ALLOWED = Decision(allowed=True, limit=None, retry_after=None, headers={}, reservation=None)


class Limiter(Protocol):
    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int) -> Decision: ...

    async def settle(
        self, key_id: str, limits: Limits, decision: Decision, *, actual_tokens: int, cost_usd: float
    ) -> None: ...

    async def close(self) -> None: ...


def format_duration(seconds: float | None) -> str:
    """OpenAI's (Go's) duration format: "20ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    ms = max(0, round((seconds or 0.0) * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_MONDAY_OFFSET = 4 * 86_400  # 1970-01-01 was a Thursday: weeks from Monday 00:00 UTC start 4 days later
_FIXED_PERIODS = {"1h": (3600, 0), "7d": (7 * 86_400, _MONDAY_OFFSET), "30d": (30 * 86_400, 0)}


def period_bounds(period: str | None, now: float) -> tuple[float, float | None]:
    """(start, end) of the UTC budget period holding ``now``; a lifetime budget is ``(0.0, None)``."""
    if period is None:
        return 0.0, None
    fixed = _FIXED_PERIODS.get(period)
    if fixed is not None:
        length, offset = fixed
        start_ts = (now - offset) // length * length + offset
        return start_ts, start_ts + length
    moment = datetime.fromtimestamp(now, UTC)
    if period in ("daily", "1d"):
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


def to_ms(now: float) -> int:
    return int(now * 1000)


@dataclass(frozen=True)
class Usage:
    """A key's window state after an admission attempt, as both limiters report it."""

    requests: int = 0
    requests_reset_ms: int = 0
    tokens: int = 0
    tokens_reset_ms: int = 0


def build_headers(limits: Limits, usage: Usage) -> dict[str, str]:
    headers: dict[str, str] = {}
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - usage.requests))
        headers["x-ratelimit-reset-requests"] = format_duration(usage.requests_reset_ms / 1000)
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - usage.tokens))
        headers["x-ratelimit-reset-tokens"] = format_duration(usage.tokens_reset_ms / 1000)
    return headers


def make_decision(
    limits: Limits,
    usage: Usage,
    *,
    limit: str | None,
    retry_after_ms: int | None,
    reservation: str | None,
    now: float,
) -> Decision:
    """The decision for an admission attempt; ``limit`` None means admitted."""
    headers = build_headers(limits, usage)
    if limit is None:
        return Decision(allowed=True, limit=None, retry_after=None, headers=headers, reservation=reservation)
    # clamp to the window: a replica whose clock trails another's would otherwise promise more than 60 s
    retry_after = None if retry_after_ms is None or retry_after_ms < 0 else min(retry_after_ms, WINDOW_MS) / 1000
    detail = ""
    if limit in ("budget", "tenant_budget"):
        period = limits.tenant_budget_period if limit == "tenant_budget" else limits.budget_period
        end = period_bounds(period, now)[1]
        retry_after = None if end is None else max(0.0, end - now)
    elif limit == "tokens" and retry_after is None:
        detail = f"Request too large: its token estimate exceeds this key's limit of {limits.tpm} per minute."
    return Decision(
        allowed=False, limit=limit, retry_after=retry_after, headers=headers, reservation=None, detail=detail
    )


def unavailable_decision() -> Decision:
    return Decision(allowed=False, limit="unavailable", retry_after=1.0, headers={}, reservation=None)


@dataclass
class _KeyState:
    requests: deque[int] = field(default_factory=deque)  # admit times (ms), oldest first
    tokens: OrderedDict[str, list[int]] = field(default_factory=OrderedDict)  # reservation -> [ms, amount]
    token_total: int = 0
    spend_period: float | None = None
    spend: float = 0.0

    def trim(self, now_ms: int) -> None:
        cutoff = now_ms - WINDOW_MS
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.tokens:
            first = next(iter(self.tokens.values()))
            if first[0] > cutoff:
                break
            self.token_total -= self.tokens.popitem(last=False)[1][1]

    def usage(self, now_ms: int) -> Usage:
        return Usage(
            requests=len(self.requests),
            requests_reset_ms=self.requests[0] + WINDOW_MS - now_ms if self.requests else 0,
            tokens=self.token_total,
            tokens_reset_ms=next(iter(self.tokens.values()))[0] + WINDOW_MS - now_ms if self.tokens else 0,
        )

    def tokens_retry_ms(self, need: int, now_ms: int) -> int | None:
        freed = 0
        for stamp, amount in self.tokens.values():
            freed += amount
            if freed >= need:
                return stamp + WINDOW_MS - now_ms
        return None


class MemoryLimiter:
    """Limits for a single process (no shared state): the same semantics as ``RedisLimiter``."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        spend_loader: SpendLoader | None = None,
        tenant_spend_loader: SpendLoader | None = None,
    ) -> None:
        self._clock = clock
        self._spend_loader = spend_loader
        self._tenant_spend_loader = tenant_spend_loader
        self._states: dict[str, _KeyState] = {}
        self._tenants: dict[str, _KeyState] = {}  # only spend_period and spend are used

    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int) -> Decision:
        if limits.unlimited:
            return ALLOWED
        state = self._states.setdefault(key_id, _KeyState())
        tenant = self._tenants.setdefault(limits.tenant, _KeyState()) if limits.tenant is not None else None
        estimate = max(0, int(estimated_tokens))
        try:
            if limits.budget_usd is not None:
                await self._seed(self._spend_loader, key_id, state, limits.budget_period)
            if tenant is not None and limits.tenant is not None:
                await self._seed(self._tenant_spend_loader, limits.tenant, tenant, limits.tenant_budget_period)
        except Exception:
            log.exception("spend_loader failed for key %s", key_id)
            return unavailable_decision()
        # From here on there is no await: check-and-count is atomic within the event loop.
        now = self._clock()
        now_ms = to_ms(now)
        state.trim(now_ms)
        limit, retry_ms = self._check(state, limits, estimate, now_ms)
        if tenant is not None and limits.tenant_budget_usd is not None and tenant.spend >= limits.tenant_budget_usd:
            limit, retry_ms = "tenant_budget", None
        reservation = None
        if limit is None:
            reservation = new_reservation_id()
            if limits.rpm is not None:
                state.requests.append(now_ms)
            if limits.tpm is not None:
                state.tokens[reservation] = [now_ms, estimate]
                state.token_total += estimate
        return make_decision(
            limits,
            state.usage(now_ms),
            limit=limit,
            retry_after_ms=retry_ms,
            reservation=reservation,
            now=now,
        )

    async def settle(
        self, key_id: str, limits: Limits, decision: Decision, *, actual_tokens: int, cost_usd: float
    ) -> None:
        state = self._states.get(key_id)
        if state is None or not decision.allowed:
            return
        if limits.tpm is not None and decision.reservation is not None:
            entry = state.tokens.get(decision.reservation)
            if entry is not None:  # else it already left the window
                actual = max(0, int(actual_tokens))
                state.token_total += actual - entry[1]
                entry[1] = actual
        if cost_usd <= 0:
            return
        now = self._clock()
        if limits.budget_usd is not None and state.spend_period == period_bounds(limits.budget_period, now)[0]:
            state.spend += cost_usd
        tenant = self._tenants.get(limits.tenant) if limits.tenant is not None else None
        if tenant is not None and tenant.spend_period == period_bounds(limits.tenant_budget_period, now)[0]:
            tenant.spend += cost_usd

    async def close(self) -> None:
        self._states.clear()
        self._tenants.clear()

    async def _seed(self, loader: SpendLoader | None, owner: str, state: _KeyState, period: str | None) -> None:
        start, _ = period_bounds(period, self._clock())
        if state.spend_period == start:
            return
        spend = 0.0
        if loader is not None:
            spend = float(await loader(owner, start) or 0.0)
        if state.spend_period != start:  # set-if-absent: a concurrent admit may have seeded it meanwhile
            state.spend_period, state.spend = start, spend

    def _check(
        self, state: _KeyState, limits: Limits, estimate: int, now_ms: int
    ) -> tuple[str | None, int | None]:
        if limits.budget_usd is not None and state.spend >= limits.budget_usd:
            return "budget", None
        if limits.rpm is not None and len(state.requests) >= limits.rpm:
            return "requests", state.requests[0] + WINDOW_MS - now_ms if state.requests else None
        if limits.tpm is not None and state.token_total + estimate > limits.tpm:
            if estimate > limits.tpm:
                return "tokens", None
            return "tokens", state.tokens_retry_ms(state.token_total + estimate - limits.tpm, now_ms)
        return None, None
