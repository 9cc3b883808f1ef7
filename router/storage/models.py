"""Typed values exchanged with the storage layer, the ``Storage`` protocol, and helpers shared by backends."""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from router.storage.errors import InvalidQueryError

DAY = 86_400
GROUP_BY = ("day", "model", "key", "tenant", "tag", "user")
RAW_ONLY_GROUPS = ("tag", "user")  # the daily rollup has neither: these read raw rows
MAX_TAGS = 20
MAX_TAG_CHARS = 128
CACHE_HITS = ("exact", "semantic")
CACHE_LOOKUPS = ("exact", "semantic", "miss")


@dataclass
class UsageRecord:
    """One request as the router saw it; costs and token counts are computed by the router."""

    request_id: str
    ts: float
    route: str
    key_id: str | None
    tenant: str
    end_user: str | None
    model: str
    deployment: str | None
    provider: str | None
    cache: str
    similarity: float | None
    prompt_tokens_client: int
    prompt_tokens_sent: int
    completion_tokens: int
    cost_usd: float
    saved_cache_usd: float
    saved_compression_usd: float
    latency_ms: float
    ttft_ms: float | None
    status: int
    error_type: str | None
    stream: bool
    request_body: str | None = None
    response_body: str | None = None
    tags: str | None = None  # a JSON array of strings (``usage_tags`` holds one row per tag for grouping)
    metadata: str | None = None  # the request's ``metadata`` as JSON text, capped by the writer
    trace_id: str | None = None  # the W3C trace id of the request's ``traceparent``
    cache_reason: str | None = None  # why the cache hit or missed (router.pipeline.cache_debug), NULL: no lookup


USAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UsageRecord))
BODY_COLUMNS = ("request_body", "response_body")


@dataclass
class KeyRecord:
    """A virtual API key; only the sha256 of the secret is stored."""

    id: str
    name: str
    tenant: str
    secret_hash: str
    prefix: str
    allowed_models: list[str] = field(default_factory=list)
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None


KEY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(KeyRecord))
KEY_UPDATABLE = frozenset(KEY_COLUMNS) - {"id", "created_at"}
BUDGET_PERIODS = (None, "1h", "1d", "7d", "30d", "daily", "monthly")


@dataclass(frozen=True)
class KeyActivity:
    """A key's requests, spend and last use, read from the daily rollup (current within one usage batch)."""

    requests: int = 0
    spend_usd: float = 0.0
    last_used_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {"spend_usd": self.spend_usd, "requests": self.requests, "last_used_at": self.last_used_at}


@dataclass(frozen=True)
class UsageFilter:
    """Selects usage rows: ``since`` inclusive, ``until`` exclusive (unix seconds)."""

    since: float | None = None
    until: float | None = None
    tenant: str | None = None
    key_id: str | None = None
    model: str | None = None
    tag: str | None = None
    end_user: str | None = None

    def day_aligned(self) -> bool:
        """True when both bounds (if any) fall on UTC midnight, so the daily rollup can answer exactly."""
        return all(b is None or float(b) % DAY == 0 for b in (self.since, self.until))

    def rollup_answers(self, group_by: str | None) -> bool:
        """True when the daily rollup can answer: day-aligned, and neither tag nor end user is involved."""
        return self.day_aligned() and self.tag is None and self.end_user is None and group_by not in RAW_ONLY_GROUPS


@runtime_checkable
class Storage(Protocol):
    backend: str

    async def connect(self) -> None: ...
    async def migrate(self) -> list[int]: ...
    async def write_usage(self, rows: Sequence[UsageRecord]) -> int: ...
    async def usage_summary(self, f: UsageFilter, group_by: str | None) -> list[dict[str, Any]]: ...
    async def list_requests(
        self, f: UsageFilter, *, limit: int = 50, cursor: str | None = None, include_bodies: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    async def rollup_rows(self, f: UsageFilter) -> list[dict[str, Any]]: ...
    async def delete_older_than(self, ts: float, *, batch: int = 5000) -> int: ...
    async def key_spend_since(self, key_id: str, since: float) -> float: ...
    async def tenant_spend_since(self, tenant: str, since: float) -> float: ...
    async def key_activity(self, key_ids: Sequence[str] | None = None) -> dict[str, KeyActivity]: ...
    async def get_request(
        self, request_id: str, *, tenant: str | None = None
    ) -> dict[str, Any] | None: ...
    async def insert_key(self, k: KeyRecord) -> None: ...
    async def get_key(self, key_id: str) -> KeyRecord | None: ...
    async def get_key_by_hash(self, secret_hash: str) -> KeyRecord | None: ...
    async def list_keys(self, *, tenant: str | None = None) -> list[KeyRecord]: ...
    async def update_key(self, key_id: str, **fields: Any) -> KeyRecord | None: ...
    async def revoke_key(self, key_id: str, at: float) -> bool: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def tag_list(tags: str | None) -> list[str]:
    """The tags of a usage row (stored as a JSON array); anything else reads as no tags."""
    if not tags:
        return []
    try:
        value = json.loads(tags)
    except ValueError:
        return []
    return sorted({t for t in value if isinstance(t, str)}) if isinstance(value, list) else []


def day_of(ts: float) -> str:
    """The UTC calendar day of a unix time, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def next_midnight(ts: float) -> float:
    """The first UTC midnight at or after ``ts``."""
    return float(math.ceil(ts / DAY) * DAY)


def check_group_by(group_by: str | None) -> None:
    if group_by is not None and group_by not in GROUP_BY:
        raise InvalidQueryError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise InvalidQueryError(f"limit must be a positive integer, got {limit!r}")
    return min(limit, 1000)


def encode_cursor(ts: float, request_id: str) -> str:
    raw = json.dumps([ts, request_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, request_id = json.loads(raw)
        return float(ts), str(request_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidQueryError(f"malformed cursor {cursor!r}") from exc


def summary_row(group: Any, agg: dict[str, Any]) -> dict[str, Any]:
    """The public shape of one ``usage_summary`` row, from aggregated columns."""
    requests = int(agg["requests"] or 0)
    hits = int(agg["cache_hits"] or 0)
    lookups = int(agg["cache_lookups"] or 0)
    saved_cache = float(agg["saved_cache_usd"] or 0.0)
    saved_comp = float(agg["saved_compression_usd"] or 0.0)
    return {
        "group": group,
        "requests": requests,
        "prompt_tokens": int(agg["prompt_tokens_client"] or 0),
        "prompt_tokens_sent": int(agg["prompt_tokens_sent"] or 0),
        "completion_tokens": int(agg["completion_tokens"] or 0),
        "cost_usd": float(agg["cost_usd"] or 0.0),
        "saved_usd": saved_cache + saved_comp,
        "saved_cache_usd": saved_cache,
        "saved_compression_usd": saved_comp,
        "errors": int(agg["errors"] or 0),
        "cache_hits": hits,
        "cache_lookups": lookups,
        "cache_hit_rate": hits / lookups if lookups else 0.0,
    }


ROLLUP_SUMS = (
    "requests",
    "errors",
    "prompt_tokens_client",
    "prompt_tokens_sent",
    "completion_tokens",
    "cost_usd",
    "saved_cache_usd",
    "saved_compression_usd",
    "cache_hits",
    "cache_lookups",
)
# The same aggregates computed from raw usage rows (used when the rollup cannot answer).
RAW_AGGREGATES = {
    "requests": "COUNT(*)",
    "errors": "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
    "prompt_tokens_client": "SUM(prompt_tokens_client)",
    "prompt_tokens_sent": "SUM(prompt_tokens_sent)",
    "completion_tokens": "SUM(completion_tokens)",
    "cost_usd": "SUM(cost_usd)",
    "saved_cache_usd": "SUM(saved_cache_usd)",
    "saved_compression_usd": "SUM(saved_compression_usd)",
    "cache_hits": "SUM(CASE WHEN cache IN ('exact', 'semantic') THEN 1 ELSE 0 END)",
    "cache_lookups": "SUM(CASE WHEN cache IN ('exact', 'semantic', 'miss') THEN 1 ELSE 0 END)",
}


_PERIODS_TEXT = "'1h', '1d', '7d', '30d', 'daily', 'monthly' or None"


def validate_key(k: KeyRecord) -> None:
    if k.budget_period not in BUDGET_PERIODS:
        raise InvalidQueryError(f"budget_period must be {_PERIODS_TEXT}, got {k.budget_period!r}")


def check_key_fields(updates: dict[str, Any]) -> None:
    unknown = set(updates) - KEY_UPDATABLE
    if unknown:
        raise InvalidQueryError(f"cannot update key field(s): {', '.join(sorted(unknown))}")
    if "budget_period" in updates and updates["budget_period"] not in BUDGET_PERIODS:
        period = updates["budget_period"]
        raise InvalidQueryError(f"budget_period must be {_PERIODS_TEXT}, got {period!r}")
