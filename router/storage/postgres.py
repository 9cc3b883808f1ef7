"""PostgreSQL backend (asyncpg pool).

A batch is written in one statement: the rows travel as column arrays (``unnest``), are inserted with
``ON CONFLICT DO NOTHING RETURNING``, and only the returned (actually inserted) rows are aggregated into the
daily rollup, in the same statement and so the same transaction.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from router.storage import keysql
from router.storage.errors import DuplicateKeyError, StorageDataError, StorageError, StorageUnavailableError
from router.storage.migrations import MIGRATIONS_TABLE, POSTGRES
from router.storage.models import (
    ROLLUP_SUMS,
    USAGE_COLUMNS,
    KeyActivity,
    KeyRecord,
    UsageFilter,
    UsageRecord,
    check_limit,
    encode_cursor,
    summary_row,
    validate_key,
)
from router.storage.queries import (
    Dialect,
    activity_sql,
    request_sql,
    requests_sql,
    retention_sql,
    rollup_sql,
    spend_sql,
    summary_sql,
)

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x64656A61  # "deja": serialises concurrent start-ups migrating the same database
_PG_TYPES = {"str": "text", "float": "float8", "int": "int4", "bool": "bool"}
# Row values the database (or asyncpg's encoder) rejects; checked before _UNAVAILABLE, which they overlap.
_DATA = (asyncpg.DataError, asyncpg.exceptions._base.DataError, asyncpg.IntegrityConstraintViolationError)
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


DIALECT = Dialect(
    numbered=True,
    raw_day="to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    rollup_day="to_char(day, 'YYYY-MM-DD')",
    day_param=_day,
)


def _write_sql() -> str:
    types = {f.name: _PG_TYPES[str(f.type).replace(" | None", "")] for f in fields(UsageRecord)}
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(USAGE_COLUMNS, start=1))
    cols = ", ".join(USAGE_COLUMNS)
    sums = (
        "COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens_client), "
        "SUM(prompt_tokens_sent), SUM(completion_tokens), SUM(cost_usd), SUM(saved_cache_usd), "
        "SUM(saved_compression_usd), SUM(CASE WHEN cache IN ('exact', 'semantic') THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN cache IN ('exact', 'semantic', 'miss') THEN 1 ELSE 0 END)"
    )
    updates = ", ".join(f"{c} = usage_daily.{c} + EXCLUDED.{c}" for c in ROLLUP_SUMS)
    updates += ", last_ts = GREATEST(usage_daily.last_ts, EXCLUDED.last_ts)"
    return f"""
WITH src AS (SELECT * FROM unnest({arrays}) AS t({cols})),
ins AS (
    INSERT INTO usage_log ({cols}) SELECT {cols} FROM src
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, ts, tenant, key_id, model, status, cache, prompt_tokens_client, prompt_tokens_sent,
              completion_tokens, cost_usd, saved_cache_usd, saved_compression_usd, tags
),
tagged AS (
    INSERT INTO usage_tags (tenant, request_id, tag, ts)
    SELECT DISTINCT ins.tenant, ins.request_id, t.tag, ins.ts
    FROM ins, jsonb_array_elements_text(ins.tags::jsonb) AS t(tag) WHERE ins.tags IS NOT NULL
    ON CONFLICT DO NOTHING
),
roll AS (
    INSERT INTO usage_daily (day, tenant, key_id, model, {", ".join(ROLLUP_SUMS)}, last_ts)
    SELECT (to_timestamp(ts) AT TIME ZONE 'UTC')::date, tenant, COALESCE(key_id, ''), model, {sums}, MAX(ts)
    FROM ins GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET {updates}
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM ins) AS inserted, (SELECT COUNT(*) FROM roll) AS groups
"""


_WRITE_SQL = _write_sql()


class PostgresStorage:
    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 5,
        timeout: float = 10.0,
    ) -> None:
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise StorageError(f"invalid schema name {schema!r}")
        self.url = url
        self.schema = schema
        self._min_size, self._max_size, self._timeout = min_size, max_size, timeout
        self._pool: asyncpg.Pool | None = None

    async def connect(self) -> None:
        if self._pool is not None:
            return
        settings = {"search_path": f'"{self.schema}"'} if self.schema else {}
        try:
            if self.schema:
                conn = await asyncpg.connect(self.url, timeout=self._timeout)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings=settings,
            )
        except _UNAVAILABLE as exc:
            raise StorageUnavailableError(f"PostgreSQL unreachable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"PostgreSQL connect failed: {exc}") from exc

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StorageUnavailableError("storage is not connected")
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except StorageError:
            raise
        except _DATA as exc:
            raise StorageDataError(f"PostgreSQL rejected a value: {exc}") from exc
        except _UNAVAILABLE as exc:
            raise StorageUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(MIGRATIONS_TABLE.format(float="DOUBLE PRECISION"))
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, sql in POSTGRES:
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time())
                applied.append(version)
        return applied

    async def write_usage(self, rows: Sequence[UsageRecord]) -> int:
        unique = list({r.request_id: r for r in rows}.values())
        if not unique:
            return 0
        columns = [[getattr(r, c) for r in unique] for c in USAGE_COLUMNS]
        async with self._conn() as conn:
            record = await conn.fetchrow(_WRITE_SQL, *columns)
        return int(record["inserted"])

    async def usage_summary(self, f: UsageFilter, group_by: str | None) -> list[dict[str, Any]]:
        sql, params, _ = summary_sql(DIALECT, f, group_by)
        async with self._conn() as conn:
            records = await conn.fetch(sql, *params)
        return [summary_row(r["grp"], dict(r)) for r in records]

    async def list_requests(
        self, f: UsageFilter, *, limit: int = 50, cursor: str | None = None, include_bodies: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = check_limit(limit)
        sql, params = requests_sql(DIALECT, f, limit=limit, cursor=cursor, include_bodies=include_bodies)
        async with self._conn() as conn:
            records = await conn.fetch(sql, *params)
        rows = [dict(r) for r in records[:limit]]
        nxt = encode_cursor(rows[-1]["ts"], rows[-1]["request_id"]) if len(records) > limit else None
        return rows, nxt

    async def rollup_rows(self, f: UsageFilter) -> list[dict[str, Any]]:
        sql, params = rollup_sql(DIALECT, f)
        async with self._conn() as conn:
            return [dict(r) for r in await conn.fetch(sql, *params)]

    async def delete_older_than(self, ts: float, *, batch: int = 5000) -> int:
        """Delete usage rows (and their tags) older than ``ts``, in batches; returns the usage rows deleted."""
        counts = {}
        for table in ("usage_log", "usage_tags"):
            total, sql = 0, retention_sql(DIALECT, table)
            while True:
                async with self._conn() as conn:
                    status = await conn.execute(sql, float(ts), batch)
                deleted = int(status.split()[-1])
                total += deleted
                if deleted < batch:
                    break
            counts[table] = total
        return counts["usage_log"]

    async def key_spend_since(self, key_id: str, since: float) -> float:
        sql, params = spend_sql(DIALECT, key_id, since)
        async with self._conn() as conn:
            return float(await conn.fetchval(sql, *params))

    async def tenant_spend_since(self, tenant: str, since: float) -> float:
        sql, params = spend_sql(DIALECT, tenant, since, column="tenant")
        async with self._conn() as conn:
            return float(await conn.fetchval(sql, *params))

    async def key_activity(self, key_ids: Sequence[str] | None = None) -> dict[str, KeyActivity]:
        sql, params = activity_sql(DIALECT, None if key_ids is None else list(key_ids))
        async with self._conn() as conn:
            records = await conn.fetch(sql, *params)
        return {r["key_id"]: KeyActivity(int(r["requests"] or 0), float(r["spend"] or 0.0), r["last_ts"])
                for r in records}

    async def get_request(self, request_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
        sql, params = request_sql(DIALECT, request_id, tenant)
        async with self._conn() as conn:
            row = await conn.fetchrow(sql, *params)
        return None if row is None else dict(row)

    async def insert_key(self, k: KeyRecord) -> None:
        validate_key(k)
        async with self._conn() as conn:
            try:
                await conn.execute(keysql.insert_key_sql(DIALECT), *keysql.key_params(k))
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateKeyError(f"key {k.id!r} or its secret already exists") from exc

    async def _one_key(self, column: str, value: str) -> KeyRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(keysql.select_key_sql(DIALECT, column), value)
        return None if row is None else keysql.row_to_key(row)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._one_key("id", key_id)

    async def get_key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        return await self._one_key("secret_hash", secret_hash)

    async def list_keys(self, *, tenant: str | None = None) -> list[KeyRecord]:
        sql = keysql.select_key_sql(DIALECT, None if tenant is None else "tenant")
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *([] if tenant is None else [tenant]))
        return [keysql.row_to_key(r) for r in rows]

    async def update_key(self, key_id: str, **fields: Any) -> KeyRecord | None:
        if fields:
            sql, params = keysql.update_key_sql(DIALECT, key_id, fields)
            async with self._conn() as conn:
                try:
                    await conn.execute(sql, *params)
                except asyncpg.UniqueViolationError as exc:
                    raise DuplicateKeyError(f"another key has this secret hash: {exc}") from exc
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str, at: float) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(keysql.revoke_key_sql(DIALECT), float(at), key_id)
        return status.split()[-1] == "1"

    async def ping(self) -> bool:
        try:
            async with self._conn() as conn:
                return await conn.fetchval("SELECT 1") == 1
        except StorageError:
            return False

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except (TimeoutError, *_UNAVAILABLE):
                pool.terminate()


__all__ = ["PostgresStorage"]
