"""Virtual-key authentication.

Secrets look like ``sk-deja-<43 url-safe chars>``; only their SHA-256 hex digest is stored. A request
carries its key as ``Authorization: Bearer <key>`` or, as Azure clients send it, ``api-key: <key>``.

- No master key configured: deja runs *open*, every request is the anonymous principal (tenant "default").
- The master key: the master principal (tenant "default", every model, no limits).
- A virtual key: looked up by hash through ``lookup`` and cached per replica for at most ``cache_ttl``
  seconds (misses too), so a revocation is effective on every replica within ``cache_ttl``. When the lookup
  fails and a (stale) entry is cached, the stale entry is used; otherwise the failure is a 503.

Secrets are compared with ``hmac.compare_digest``. ``allowed_models`` holds exact names or ``fnmatch``
patterns (``"gpt-4o*"``); an empty list means every model.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from router.http.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError

log = logging.getLogger(__name__)

SECRET_PREFIX = "sk-deja-"
BUDGET_PERIODS = ("1h", "1d", "7d", "30d", "daily", "monthly")
_DISPLAY_CHARS = 4
_MAX_CACHE_ENTRIES = 10_000


class KeyRecordLike(Protocol):
    """The attributes of ``router.storage.KeyRecord`` that authentication reads."""

    id: str
    name: str
    tenant: str
    secret_hash: str
    allowed_models: list[str]
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: str | None
    expires_at: float | None
    metadata: dict[str, Any]
    revoked_at: float | None


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest under which a secret is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> tuple[str, str, str]:
    """A new secret: ``(secret, sha256-hex hash, display prefix like "sk-deja-AbCd…")``."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_secret(secret), secret[: len(SECRET_PREFIX) + _DISPLAY_CHARS] + "…"


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None  # one of BUDGET_PERIODS, or None (lifetime)
    tenant: str | None = None  # set with tenant_budget_usd: the key's tenant (team) has a budget of its own
    tenant_budget_usd: float | None = None
    tenant_budget_period: str | None = None

    def __post_init__(self) -> None:
        for period in (self.budget_period, self.tenant_budget_period):
            if period is not None and period not in BUDGET_PERIODS:
                raise ValueError(f"budget_period must be one of {BUDGET_PERIODS} or None: {period!r}")

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.budget_usd is None and self.tenant_budget_usd is None


@dataclass(frozen=True)
class LimitPolicy:
    """Limits a virtual key gets when it sets none of its own (``limits.default_*``), and budgets per tenant
    (``limits.tenant_budgets``: tenant -> (USD, period))."""

    default_rpm: int | None = None
    default_tpm: int | None = None
    default_budget_usd: float | None = None
    default_budget_period: str | None = None
    tenant_budgets: Mapping[str, tuple[float, str | None]] = field(default_factory=dict)

    def limits_for(self, record: KeyRecordLike) -> Limits:
        own_budget = record.budget_usd is not None
        tenant_budget = self.tenant_budgets.get(record.tenant)
        return Limits(
            rpm=record.rpm if record.rpm is not None else self.default_rpm,
            tpm=record.tpm if record.tpm is not None else self.default_tpm,
            budget_usd=record.budget_usd if own_budget else self.default_budget_usd,
            budget_period=record.budget_period if own_budget else self.default_budget_period,
            tenant=record.tenant if tenant_budget is not None else None,
            tenant_budget_usd=None if tenant_budget is None else tenant_budget[0],
            tenant_budget_period=None if tenant_budget is None else tenant_budget[1],
        )


NO_POLICY = LimitPolicy()


@dataclass(frozen=True)
class Principal:
    key_id: str | None
    tenant: str
    name: str
    is_master: bool
    allowed_models: tuple[str, ...]
    limits: Limits
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def may_use(self, model: str) -> bool:
        if self.is_master or not self.allowed_models:
            return True
        return any(model == allowed or fnmatchcase(model, allowed) for allowed in self.allowed_models)


ANONYMOUS = Principal(
    key_id=None, tenant="default", name="anonymous", is_master=False, allowed_models=(), limits=Limits()
)
MASTER = Principal(
    key_id=None, tenant="default", name="master", is_master=True, allowed_models=(), limits=Limits()
)


def principal_from_record(record: KeyRecordLike, policy: LimitPolicy = NO_POLICY) -> Principal:
    return Principal(
        key_id=record.id,
        tenant=record.tenant,
        name=record.name,
        is_master=False,
        allowed_models=tuple(record.allowed_models or ()),
        limits=policy.limits_for(record),
        metadata=dict(record.metadata or {}),
    )


@dataclass
class _Entry:
    fetched_at: float
    record: KeyRecordLike | None


class Authenticator:
    def __init__(
        self,
        *,
        master_key: str | None,
        lookup: Callable[[str], Awaitable[KeyRecordLike | None]],
        cache_ttl: float = 1.0,
        clock: Callable[[], float] = time.time,
        policy: LimitPolicy = NO_POLICY,
    ) -> None:
        self._master_key = master_key.encode("utf-8") if master_key else None
        self._policy = policy
        self._lookup = lookup
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecordLike | None]] = {}

    @property
    def open(self) -> bool:
        """True when no master key is configured: every request is anonymous."""
        return self._master_key is None

    def extract_secret(self, headers: Mapping[str, str]) -> str | None:
        """The key from ``Authorization: Bearer …`` or ``api-key: …`` (header names case-insensitive)."""
        authorization = _header(headers, "authorization")
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        api_key = _header(headers, "api-key")
        if api_key and api_key.strip():
            return api_key.strip()
        return None

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self._master_key is None:
            return ANONYMOUS
        secret = self.extract_secret(headers)
        if secret is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send 'Authorization: Bearer <key>' or 'api-key: <key>'.",
                code="missing_api_key",
            )
        try:
            raw = secret.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach us as lone surrogates
            raise AuthenticationError("Incorrect API key provided: the header is not UTF-8 text.") from None
        if hmac.compare_digest(raw, self._master_key):
            return MASTER
        if not secret.startswith(SECRET_PREFIX):  # not one of ours: no lookup needed
            raise AuthenticationError("Incorrect API key provided.")
        digest = hash_secret(secret)
        record = await self._record(digest)
        if record is None or not hmac.compare_digest(record.secret_hash.encode(), digest.encode()):
            raise AuthenticationError("Incorrect API key provided.")
        now = self._clock()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise AuthenticationError("This API key has been revoked.")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        return principal_from_record(record, self._policy)

    async def require_master(self, headers: Mapping[str, str]) -> Principal:
        """The master principal, or 401 (no/bad key) / 403 (a virtual key, or no master key configured)."""
        if self._master_key is None:
            raise PermissionDeniedError(
                "The admin API is disabled: no master key is configured.", code="master_key_required"
            )
        principal = await self.authenticate(headers)
        if not principal.is_master:
            raise PermissionDeniedError("This operation requires the master key.", code="master_key_required")
        return principal

    def check_model(self, principal: Principal, model: str, resolved: str | None = None) -> None:
        """``resolved``: the group an alias names; as in LiteLLM, either name in ``allowed_models`` admits it."""
        if not principal.may_use(model) and (resolved is None or not principal.may_use(resolved)):
            raise PermissionDeniedError(f"This API key may not use the model '{model}'.", param="model")

    def invalidate(self, secret_hash: str | None = None) -> None:
        """Drop one cached key (or all): lets the replica that handled a revocation apply it at once."""
        if secret_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(secret_hash, None)

    async def _record(self, digest: str) -> KeyRecordLike | None:
        entry = self._cache.get(digest)
        if entry is not None and self._clock() - entry.fetched_at < self._cache_ttl:
            return entry.record
        pending = self._inflight.get(digest)
        if pending is not None:  # one lookup per hash at a time; concurrent requests share its result
            return await asyncio.shield(pending)
        pending = asyncio.get_running_loop().create_future()
        self._inflight[digest] = pending
        try:
            pending.set_result(await self._fetch(digest, entry))
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:
            pending.set_exception(exc)
        finally:
            del self._inflight[digest]
        return pending.result()

    async def _fetch(self, digest: str, stale: _Entry | None) -> KeyRecordLike | None:
        try:
            record = await self._lookup(digest)
        except Exception as exc:
            if stale is not None:
                log.warning("key lookup failed, using the cached entry: %r", exc)
                return stale.record
            raise ServiceUnavailableError("The key store is unavailable; try again shortly.") from exc
        self._remember(digest, record)
        return record

    def _remember(self, digest: str, record: KeyRecordLike | None) -> None:
        now = self._clock()
        self._cache.pop(digest, None)
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            for key in [k for k, e in self._cache.items() if now - e.fetched_at >= self._cache_ttl]:
                del self._cache[key]
            while len(self._cache) >= _MAX_CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = _Entry(fetched_at=now, record=record)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():  # plain dicts are case-sensitive; aiohttp's CIMultiDict is not
        if key.lower() == name:
            return candidate
    return None
