"""Rate limits and budgets shared by every replica: one Lua script per admission, atomically in Redis.

Per key (all under one hash tag, so the script's keys share a cluster slot):

- ``{prefix}rl:{<key_id>}:req``      sorted set, one member per admitted request, scored by admit time (ms)
- ``{prefix}rl:{<key_id>}:tok``      sorted set, one member per token reservation, scored by admit time (ms)
- ``{prefix}rl:{<key_id>}:tokamt``   hash reservation -> tokens, plus ``__total`` = the sum in the window
- ``{prefix}rl:{<key_id>}:spend:<period start>``  spend (USD) in that period, seeded by ``spend_loader``

Per tenant with a budget: ``{prefix}rl:{tenant:<tenant>}:spend:<period start>``, seeded by
``tenant_spend_loader``, read before the key's script and increased at settlement (a separate command: the
tenant's counter lives in another cluster slot than the key's).

Clock: by default the caller's ``clock`` (``time.time``) is passed into the script, which keeps tests able to
move time without sleeping; replicas must then run NTP-synchronised clocks (a skew of ``s`` seconds shifts
window edges by ``s``). Pass ``clock=None`` to use Redis ``TIME`` instead: one honest shared clock for the
windows (budget periods are still computed from the local clock, which only matters at midnight UTC).

Redis failures (connection refused, 0.5 s timeouts, no pooled connection free within ``pool_timeout``)
follow ``failure_mode``: ``"closed"`` (default) denies with ``limit="unavailable"`` (a 503), ``"open"``
admits without counting. Either way the failure is logged and ``on_unavailable()`` is called (the router
turns it into a metric); there is never a silent fallback to per-replica counting. A failing
``spend_loader`` is handled the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.auth.keys import Limits
from router.limits.memory import (
    ALLOWED,
    WINDOW_MS,
    Decision,
    SpendLoader,
    Usage,
    make_decision,
    new_reservation_id,
    period_bounds,
    to_ms,
    unavailable_decision,
)

log = logging.getLogger(__name__)

_LIMIT_NAMES = {0: None, 1: "requests", 2: "tokens", 3: "budget"}
_LIFETIME_SPEND_TTL = 7 * 86_400  # re-seeded from the database after this
_SEED_AGAIN = 2

# Returns {status, limit, retry_ms, requests, requests_reset_ms, tokens, tokens_reset_ms, now_ms};
# status 1 admitted, 0 denied, 2 spend counter absent (seed it, then call again);
# limit 0 none, 1 requests, 2 tokens, 3 budget; retry_ms -1 = never (or not applicable).
ADMIT_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local estimate, member = tonumber(ARGV[6]), ARGV[7]
local cutoff = now - window

local over_budget = false
if ARGV[5] ~= '' then
  local spend = redis.call('GET', KEYS[4])
  if not spend then return {2, 0, -1, 0, 0, 0, 0, now} end
  over_budget = tonumber(spend) >= tonumber(ARGV[5])
end

local requests = 0
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  requests = redis.call('ZCARD', KEYS[1])
end

local tokens = 0
if tpm >= 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #expired > 0 then
    local freed = 0
    for i = 1, #expired, 500 do
      local chunk = {unpack(expired, i, math.min(i + 499, #expired))}
      for _, amount in ipairs(redis.call('HMGET', KEYS[3], unpack(chunk))) do
        freed = freed + (tonumber(amount) or 0)
      end
      redis.call('HDEL', KEYS[3], unpack(chunk))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    redis.call('HINCRBY', KEYS[3], '__total', -freed)
  end
  tokens = tonumber(redis.call('HGET', KEYS[3], '__total') or '0')
end

local limit, retry = 0, -1
if over_budget then
  limit = 3
elseif rpm >= 0 and requests >= rpm then
  limit = 1
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest > 0 then retry = tonumber(oldest[2]) + window - now end
elseif tpm >= 0 and tokens + estimate > tpm then
  limit = 2
  if estimate <= tpm then
    local need, freed = tokens + estimate - tpm, 0
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[3], entries[i])) or 0)
      if freed >= need then
        retry = tonumber(entries[i + 1]) + window - now
        break
      end
    end
  end
end

if limit == 0 then
  if rpm >= 0 then
    redis.call('ZADD', KEYS[1], now, member)
    redis.call('PEXPIRE', KEYS[1], window + 1000)
    requests = requests + 1
  end
  if tpm >= 0 then
    redis.call('ZADD', KEYS[2], now, member)
    redis.call('HSET', KEYS[3], member, estimate)
    redis.call('HINCRBY', KEYS[3], '__total', estimate)
    redis.call('PEXPIRE', KEYS[2], window + 1000)
    redis.call('PEXPIRE', KEYS[3], window + 1000)
    tokens = tokens + estimate
  end
end

local requests_reset, tokens_reset = 0, 0
if rpm >= 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest > 0 then requests_reset = tonumber(oldest[2]) + window - now end
end
if tpm >= 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #oldest > 0 then tokens_reset = tonumber(oldest[2]) + window - now end
end
local status = 0
if limit == 0 then status = 1 end
return {status, limit, retry, requests, requests_reset, tokens, tokens_reset, now}
"""

# KEYS: token amounts hash, spend counter. ARGV: reservation ('' = none), actual tokens, cost ('' = none).
# A reservation that already left the window is not corrected; an absent spend counter is not created
# (it is seeded from the database, which records the cost itself, at the next admission).
SETTLE_LUA = """
if ARGV[1] ~= '' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  if old then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('HINCRBY', KEYS[1], '__total', tonumber(ARGV[2]) - tonumber(old))
  end
end
if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[3])
end
return 1
"""


class SpendLoaderFailed(Exception):
    """``spend_loader`` raised; handled like an unreachable Redis."""


class RedisLimiter:
    def __init__(
        self,
        redis_url_or_client: str | aioredis.Redis,
        *,
        prefix: str,
        failure_mode: Literal["closed", "open"] = "closed",
        spend_loader: SpendLoader | None = None,
        tenant_spend_loader: SpendLoader | None = None,
        clock: Callable[[], float] | None = time.time,
        on_unavailable: Callable[[], None] | None = None,
        timeout: float = 0.5,
        max_connections: int = 32,
        pool_timeout: float = 1.0,
    ) -> None:
        if failure_mode not in ("closed", "open"):
            raise ValueError(f"failure_mode must be 'closed' or 'open', not {failure_mode!r}")
        self._own_client = isinstance(redis_url_or_client, str)
        if isinstance(redis_url_or_client, str):
            from router.redis_pool import bounded_client

            self._redis = bounded_client(redis_url_or_client, max_connections=max_connections, timeout=timeout,
                                         pool_timeout=pool_timeout)
        else:  # a shared client (the app's one pool): closed by its owner
            self._redis = redis_url_or_client
        self._admit_script = self._redis.register_script(ADMIT_LUA)
        self._settle_script = self._redis.register_script(SETTLE_LUA)
        self._prefix = prefix
        self._failure_mode = failure_mode
        self._spend_loader = spend_loader
        self._tenant_spend_loader = tenant_spend_loader
        self._clock = clock
        self._on_unavailable = on_unavailable
        self._healthy = True

    async def admit(self, key_id: str, limits: Limits, *, estimated_tokens: int) -> Decision:
        if limits.unlimited:
            return ALLOWED
        now = self._now()
        reservation = new_reservation_id()
        keys = self._keys(key_id, limits, now)
        args = [
            "" if self._clock is None else str(to_ms(now)),
            str(WINDOW_MS),
            str(-1 if limits.rpm is None else limits.rpm),
            str(-1 if limits.tpm is None else limits.tpm),
            "" if limits.budget_usd is None else repr(float(limits.budget_usd)),
            str(max(0, int(estimated_tokens))),
            reservation,
        ]
        try:
            if limits.tenant is not None and limits.tenant_budget_usd is not None:
                spent = await self._tenant_spend(limits, now)
                if spent >= limits.tenant_budget_usd:
                    self._mark_healthy()
                    return make_decision(limits, Usage(), limit="tenant_budget", retry_after_ms=None,
                                         reservation=None, now=now)
            result = await self._admit_script(keys=keys, args=args)
            if int(result[0]) == _SEED_AGAIN:
                await self._seed_spend(keys[3], key_id, limits, now)
                result = await self._admit_script(keys=keys, args=args)
                if int(result[0]) == _SEED_AGAIN:
                    raise RedisError("spend counter vanished right after seeding")
        except (RedisError, OSError, SpendLoaderFailed) as exc:
            return self._unavailable(exc)
        self._mark_healthy()
        status, limit, retry_ms, requests, requests_reset, tokens, tokens_reset, now_ms = (
            int(x) for x in result
        )
        usage = Usage(requests, max(0, requests_reset), tokens, max(0, tokens_reset))
        return make_decision(
            limits,
            usage,
            limit=_LIMIT_NAMES[limit] if status == 0 else None,
            retry_after_ms=retry_ms,
            reservation=reservation if status == 1 else None,
            now=now_ms / 1000,
        )

    async def settle(
        self, key_id: str, limits: Limits, decision: Decision, *, actual_tokens: int, cost_usd: float
    ) -> None:
        if limits.unlimited or not decision.allowed:
            return
        reservation = decision.reservation if limits.tpm is not None and decision.reservation else ""
        cost = f"{cost_usd:.15f}" if limits.budget_usd is not None and cost_usd > 0 else ""
        tenant_cost = f"{cost_usd:.15f}" if limits.tenant_budget_usd is not None and cost_usd > 0 else ""
        if not reservation and not cost and not tenant_cost:
            return
        now = self._now()
        keys = self._keys(key_id, limits, now)
        try:
            if reservation or cost:
                await self._settle_script(
                    keys=[keys[2], keys[3]], args=[reservation, max(0, int(actual_tokens)), cost]
                )
            if tenant_cost:
                tenant_key = self._tenant_key(limits, now)
                await self._settle_script(keys=[tenant_key, tenant_key], args=["", 0, tenant_cost])
        except (RedisError, OSError) as exc:  # the response is already served: count the failure, don't raise
            self._report(exc)
            return
        self._mark_healthy()

    async def close(self) -> None:
        if self._own_client:
            await self._redis.aclose()

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    def _keys(self, key_id: str, limits: Limits, now: float) -> list[str]:
        base = f"{self._prefix}rl:{{{key_id}}}:"
        period_start, _ = period_bounds(limits.budget_period, now)
        return [base + "req", base + "tok", base + "tokamt", f"{base}spend:{int(period_start)}"]

    def _tenant_key(self, limits: Limits, now: float) -> str:
        start, _ = period_bounds(limits.tenant_budget_period, now)
        return f"{self._prefix}rl:{{tenant:{limits.tenant}}}:spend:{int(start)}"

    async def _tenant_spend(self, limits: Limits, now: float) -> float:
        """The tenant's spend in its current budget period, seeded from ``tenant_spend_loader`` when absent."""
        assert limits.tenant is not None
        key = self._tenant_key(limits, now)
        value = await self._redis.get(key)
        if value is not None:
            return float(value)
        start, end = period_bounds(limits.tenant_budget_period, now)
        spend = 0.0
        if self._tenant_spend_loader is not None:
            try:
                spend = float(await self._tenant_spend_loader(limits.tenant, start) or 0.0)
            except Exception as exc:
                raise SpendLoaderFailed(f"tenant_spend_loader failed for {limits.tenant}: {exc!r}") from exc
        ttl = _LIFETIME_SPEND_TTL if end is None else max(60, int(end - now) + 3600)
        await self._redis.set(key, repr(spend), nx=True, ex=ttl)
        value = await self._redis.get(key)  # another replica may have seeded it first
        return float(value) if value is not None else spend

    async def _seed_spend(self, spend_key: str, key_id: str, limits: Limits, now: float) -> None:
        start, end = period_bounds(limits.budget_period, now)
        spend = 0.0
        if self._spend_loader is not None:
            try:
                spend = float(await self._spend_loader(key_id, start) or 0.0)
            except Exception as exc:
                raise SpendLoaderFailed(f"spend_loader failed for key {key_id}: {exc!r}") from exc
        ttl = _LIFETIME_SPEND_TTL if end is None else max(60, int(end - now) + 3600)
        await self._redis.set(spend_key, repr(spend), nx=True, ex=ttl)

    def _unavailable(self, exc: Exception) -> Decision:
        self._report(exc)
        if self._failure_mode == "open":
            return ALLOWED
        return unavailable_decision()

    def _report(self, exc: Exception) -> None:
        if self._healthy:
            log.warning("rate limiter unavailable (failure mode %s): %r", self._failure_mode, exc)
        else:
            log.debug("rate limiter still unavailable: %r", exc)
        self._healthy = False
        if self._on_unavailable is not None:
            try:
                self._on_unavailable()
            except Exception:
                log.exception("on_unavailable callback failed")

    def _mark_healthy(self) -> None:
        if not self._healthy:
            log.info("rate limiter reachable again")
            self._healthy = True
