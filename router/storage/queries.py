"""SQL shared by both backends, parameterised by a small ``Dialect`` (placeholders and day arithmetic).

``usage_summary`` reads the daily rollup whenever the filter's bounds fall on UTC midnights (the rollup then
answers exactly, and it survives retention); a sub-day bound falls back to raw rows, which the
``(ts, request_id)``, ``(tenant, ts, request_id)`` and ``(key_id, ts, request_id)`` indexes serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.storage.models import (
    BODY_COLUMNS,
    DAY,
    RAW_AGGREGATES,
    ROLLUP_SUMS,
    USAGE_COLUMNS,
    UsageFilter,
    check_group_by,
    decode_cursor,
    next_midnight,
)


@dataclass(frozen=True)
class Dialect:
    numbered: bool  # $1, $2 … (PostgreSQL) rather than ? (SQLite)
    raw_day: str  # expression giving 'YYYY-MM-DD' of usage_log.ts
    rollup_day: str  # expression giving 'YYYY-MM-DD' of usage_daily.day
    day_param: Callable[[float], Any]  # a unix midnight → the value compared with usage_daily.day


class Params:
    """Collects query parameters and hands out the matching placeholders."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.dialect.numbered else "?"


def _where(p: Params, f: UsageFilter, *, rollup: bool) -> str:
    conds: list[str] = []
    if rollup:
        if f.since is not None:
            conds.append(f"day >= {p(p.dialect.day_param(f.since))}")
        if f.until is not None:
            conds.append(f"day < {p(p.dialect.day_param(f.until))}")
    else:
        if f.since is not None:
            conds.append(f"ts >= {p(float(f.since))}")
        if f.until is not None:
            conds.append(f"ts < {p(float(f.until))}")
    for column, value in (("tenant", f.tenant), ("key_id", f.key_id), ("model", f.model)):
        if value is not None:
            conds.append(f"{column} = {p(value)}")
    if not rollup and f.end_user is not None:
        conds.append(f"end_user = {p(f.end_user)}")
    if not rollup and f.tag is not None:
        conds.append("EXISTS (SELECT 1 FROM usage_tags t WHERE t.tenant = usage_log.tenant "
                     f"AND t.request_id = usage_log.request_id AND t.tag = {p(f.tag)})")
    return " AND ".join(conds) if conds else "1 = 1"


# Joined for group_by=tag: its columns renamed so that the filter's unqualified names stay usage_log's.
_TAG_JOIN = ("JOIN (SELECT tenant AS tag_tenant, request_id AS tag_request, tag FROM usage_tags) tags "
             "ON tags.tag_tenant = usage_log.tenant AND tags.tag_request = usage_log.request_id")


def summary_sql(d: Dialect, f: UsageFilter, group_by: str | None) -> tuple[str, list[Any], bool]:
    """The aggregate query answering ``usage_summary``; the bool tells whether it reads the rollup."""
    check_group_by(group_by)
    rollup = f.rollup_answers(group_by)
    p = Params(d)
    where = _where(p, f, rollup=rollup)
    if rollup:
        aggs = ", ".join(f"SUM({c}) AS {c}" for c in ROLLUP_SUMS)
        groups = {"day": d.rollup_day, "model": "model", "key": "NULLIF(key_id, '')", "tenant": "tenant"}
        table = "usage_daily"
    else:
        aggs = ", ".join(f"{expr} AS {c}" for c, expr in RAW_AGGREGATES.items())
        groups = {"day": d.raw_day, "model": "model", "key": "key_id", "tenant": "tenant", "user": "end_user",
                  "tag": "tags.tag"}
        table = "usage_log" + (f" {_TAG_JOIN}" if group_by == "tag" else "")
    if group_by is None:
        return f"SELECT NULL AS grp, {aggs} FROM {table} WHERE {where}", p.values, rollup
    expr = groups[group_by]
    sql = f"SELECT {expr} AS grp, {aggs} FROM {table} WHERE {where} GROUP BY {expr} "
    sql += f"ORDER BY ({expr}) IS NULL, {expr}"
    return sql, p.values, rollup


def requests_sql(
    d: Dialect, f: UsageFilter, *, limit: int, cursor: str | None, include_bodies: bool
) -> tuple[str, list[Any]]:
    """Newest first, keyset-paginated on (ts, request_id); fetches one extra row to know if a page follows."""
    p = Params(d)
    where = _where(p, f, rollup=False)
    if cursor is not None:
        ts, request_id = decode_cursor(cursor)
        where += f" AND (ts, request_id) < ({p(ts)}, {p(request_id)})"  # a row value: an index condition
    columns = [c for c in USAGE_COLUMNS if include_bodies or c not in BODY_COLUMNS]
    sql = (
        f"SELECT {', '.join(columns)} FROM usage_log WHERE {where} "
        f"ORDER BY ts DESC, request_id DESC LIMIT {p(limit + 1)}"
    )
    return sql, p.values


def rollup_sql(d: Dialect, f: UsageFilter) -> tuple[str, list[Any]]:
    p = Params(d)
    day_filter = UsageFilter(
        since=None if f.since is None else float(f.since) // DAY * DAY,
        until=None if f.until is None else next_midnight(float(f.until)),
        tenant=f.tenant,
        key_id=f.key_id,
        model=f.model,
    )
    where = _where(p, day_filter, rollup=True)
    sql = (
        f"SELECT {d.rollup_day} AS day, tenant, NULLIF(key_id, '') AS key_id, model, "
        f"{', '.join(ROLLUP_SUMS)} "
        f"FROM usage_daily WHERE {where} ORDER BY usage_daily.day, tenant, usage_daily.key_id, model"
    )
    return sql, p.values


def spend_sql(d: Dialect, key_id: str, since: float, *, column: str = "key_id") -> tuple[str, list[Any]]:
    """A key's (or, with ``column="tenant"``, a tenant's) spend since ``since``: raw rows up to the next
    midnight, then whole days from the rollup.

    Reading whole days from the rollup keeps budget seeding right even after retention deleted raw rows.
    """
    if column not in ("key_id", "tenant"):
        raise ValueError(f"spend by {column!r}")
    p = Params(d)
    boundary = next_midnight(float(since))
    raw = f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage_log WHERE {column} = {p(key_id)} "
    raw += f"AND ts >= {p(float(since))} AND ts < {p(boundary)}"
    days = f"SELECT COALESCE(SUM(cost_usd), 0) FROM usage_daily WHERE {column} = {p(key_id)} "
    days += f"AND day >= {p(d.day_param(boundary))}"
    return f"SELECT ({raw}) + ({days})", p.values


def activity_sql(d: Dialect, key_ids: list[str] | None) -> tuple[str, list[Any]]:
    """Requests, spend and last use per key, from the rollup (which retention leaves alone)."""
    p = Params(d)
    where = "key_id <> ''"
    if key_ids is not None:
        where += f" AND key_id IN ({', '.join(p(k) for k in key_ids) or 'NULL'})"
    sql = (f"SELECT key_id, SUM(requests) AS requests, SUM(cost_usd) AS spend, MAX(last_ts) AS last_ts "
           f"FROM usage_daily WHERE {where} GROUP BY key_id")
    return sql, p.values


def request_sql(d: Dialect, request_id: str, tenant: str | None) -> tuple[str, list[Any]]:
    """One stored interaction, bodies included (the newest, should a request id repeat across tenants)."""
    p = Params(d)
    where = f"request_id = {p(request_id)}"
    if tenant is not None:
        where += f" AND tenant = {p(tenant)}"
    return f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage_log WHERE {where} ORDER BY ts DESC LIMIT 1", p.values


def retention_sql(d: Dialect, table: str = "usage_log") -> str:
    ph = ("$1", "$2") if d.numbered else ("?", "?")
    if table == "usage_tags":
        return (
            "DELETE FROM usage_tags WHERE (tenant, request_id, tag) IN "
            f"(SELECT tenant, request_id, tag FROM usage_tags WHERE ts < {ph[0]} ORDER BY ts LIMIT {ph[1]})"
        )
    return (
        "DELETE FROM usage_log WHERE request_id IN "
        f"(SELECT request_id FROM usage_log WHERE ts < {ph[0]} ORDER BY ts LIMIT {ph[1]})"
    )
