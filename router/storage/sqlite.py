"""SQLite backend: the stdlib ``sqlite3`` driven from one dedicated thread, WAL mode, same logical schema.

A batch is written in one transaction: each row is inserted with ``ON CONFLICT DO NOTHING`` and only rows that
were actually inserted are aggregated into the daily rollup, so a replayed row is neither duplicated nor
counted twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from router.storage import keysql
from router.storage.errors import DuplicateKeyError, StorageDataError, StorageError, StorageUnavailableError
from router.storage.migrations import MIGRATIONS_TABLE, SQLITE
from router.storage.models import (
    CACHE_HITS,
    CACHE_LOOKUPS,
    ROLLUP_SUMS,
    USAGE_COLUMNS,
    KeyActivity,
    KeyRecord,
    UsageFilter,
    UsageRecord,
    check_limit,
    day_of,
    encode_cursor,
    summary_row,
    tag_list,
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

T = TypeVar("T")

DIALECT = Dialect(
    numbered=False,
    raw_day="strftime('%Y-%m-%d', ts, 'unixepoch')",
    rollup_day="day",
    day_param=day_of,
)
_INSERT = (
    f"INSERT INTO usage_log ({', '.join(USAGE_COLUMNS)}) VALUES ({', '.join('?' for _ in USAGE_COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_ROLLUP = (
    f"INSERT INTO usage_daily (day, tenant, key_id, model, {', '.join(ROLLUP_SUMS)}, last_ts) "
    f"VALUES (?, ?, ?, ?, {', '.join('?' for _ in ROLLUP_SUMS)}, ?) ON CONFLICT (day, tenant, key_id, model) "
    f"DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in ROLLUP_SUMS)}, "
    "last_ts = MAX(COALESCE(last_ts, 0), excluded.last_ts)"
)
_TAGS = "INSERT INTO usage_tags (tenant, request_id, tag, ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"


def _aggregate(rows: Sequence[UsageRecord]) -> list[tuple[Any, ...]]:
    """Rollup increments per (day, tenant, key, model) for freshly inserted rows, then the latest ``ts``."""
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for r in rows:
        acc = groups.setdefault((day_of(r.ts), r.tenant, r.key_id or "", r.model), [0] * (len(ROLLUP_SUMS) + 1))
        acc[-1] = max(acc[-1], r.ts)
        values = (
            1,
            1 if r.status >= 400 else 0,
            r.prompt_tokens_client,
            r.prompt_tokens_sent,
            r.completion_tokens,
            r.cost_usd,
            r.saved_cache_usd,
            r.saved_compression_usd,
            1 if r.cache in CACHE_HITS else 0,
            1 if r.cache in CACHE_LOOKUPS else 0,
        )
        for i, v in enumerate(values):
            acc[i] += v
    return [(*key, *acc) for key, acc in groups.items()]


def _tag_rows(rows: Sequence[UsageRecord]) -> list[tuple[str, str, str, float]]:
    return [(r.tenant, r.request_id, tag, r.ts) for r in rows for tag in tag_list(r.tags)]


def _path_of(url: str) -> str:
    """SQLAlchemy-style: ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite://:memory:``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if rest in ("", ":memory:", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


class SqliteStorage:
    backend = "sqlite"

    def __init__(self, url: str) -> None:
        self.path = _path_of(url)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise StorageUnavailableError("storage is not connected")
        db = self._db

        def call() -> T:
            try:
                return fn(db)
            except StorageError:
                raise
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise DuplicateKeyError(f"duplicate: {exc}") from exc
                raise StorageDataError(f"SQLite constraint failed: {exc}") from exc
            except (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.DataError) as exc:
                raise StorageDataError(f"SQLite rejected a value: {exc}") from exc
            except sqlite3.OperationalError as exc:
                raise StorageUnavailableError(f"SQLite unavailable: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite error: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def connect(self) -> None:
        if self._db is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deja-sqlite")

        def open_db() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            if self.path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._executor, open_db)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StorageUnavailableError(f"cannot open SQLite database {self.path!r}: {exc}") from exc

    async def migrate(self) -> list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            db.execute(MIGRATIONS_TABLE.format(float="REAL"))
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            applied = []
            for version, sql in SQLITE:
                if version in done:
                    continue
                # executescript commits first; wrap the script and its bookkeeping in one transaction.
                record = f"INSERT INTO schema_migrations VALUES ({version}, {time.time()!r});"
                db.executescript(f"BEGIN;\n{sql}\n{record}\nCOMMIT;")
                applied.append(version)
            return applied

        return await self._run(run)

    async def write_usage(self, rows: Sequence[UsageRecord]) -> int:
        unique = list({r.request_id: r for r in rows}.values())
        if not unique:
            return 0

        def run(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                inserted = []
                for r in unique:
                    if db.execute(_INSERT, [getattr(r, c) for c in USAGE_COLUMNS]).rowcount == 1:
                        inserted.append(r)
                db.executemany(_ROLLUP, _aggregate(inserted))
                db.executemany(_TAGS, _tag_rows(inserted))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(inserted)

        return await self._run(run)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return await self._run(lambda db: [dict(r) for r in db.execute(sql, list(params))])

    async def usage_summary(self, f: UsageFilter, group_by: str | None) -> list[dict[str, Any]]:
        sql, params, _ = summary_sql(DIALECT, f, group_by)
        return [summary_row(r["grp"], r) for r in await self._fetch(sql, params)]

    async def list_requests(
        self, f: UsageFilter, *, limit: int = 50, cursor: str | None = None, include_bodies: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = check_limit(limit)
        sql, params = requests_sql(DIALECT, f, limit=limit, cursor=cursor, include_bodies=include_bodies)
        records = await self._fetch(sql, params)
        rows = records[:limit]
        for row in rows:
            row["stream"] = bool(row["stream"])
        nxt = encode_cursor(rows[-1]["ts"], rows[-1]["request_id"]) if len(records) > limit else None
        return rows, nxt

    async def rollup_rows(self, f: UsageFilter) -> list[dict[str, Any]]:
        sql, params = rollup_sql(DIALECT, f)
        return await self._fetch(sql, params)

    async def delete_older_than(self, ts: float, *, batch: int = 5000) -> int:
        """Delete usage rows (and their tags) older than ``ts``, in batches; returns the usage rows deleted."""
        counts = {}
        for table in ("usage_log", "usage_tags"):
            total, sql = 0, retention_sql(DIALECT, table)

            def delete(db: sqlite3.Connection, sql: str = sql) -> int:
                return int(db.execute(sql, (float(ts), batch)).rowcount)

            while True:
                deleted = await self._run(delete)
                total += deleted
                if deleted < batch:
                    break
            counts[table] = total
        return counts["usage_log"]

    async def key_spend_since(self, key_id: str, since: float) -> float:
        sql, params = spend_sql(DIALECT, key_id, since)
        return await self._run(lambda db: float(db.execute(sql, params).fetchone()[0]))

    async def tenant_spend_since(self, tenant: str, since: float) -> float:
        sql, params = spend_sql(DIALECT, tenant, since, column="tenant")
        return await self._run(lambda db: float(db.execute(sql, params).fetchone()[0]))

    async def key_activity(self, key_ids: Sequence[str] | None = None) -> dict[str, KeyActivity]:
        sql, params = activity_sql(DIALECT, None if key_ids is None else list(key_ids))
        rows = await self._fetch(sql, params)
        return {r["key_id"]: KeyActivity(int(r["requests"] or 0), float(r["spend"] or 0.0), r["last_ts"])
                for r in rows}

    async def get_request(self, request_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
        sql, params = request_sql(DIALECT, request_id, tenant)
        rows = await self._fetch(sql, params)
        for row in rows:
            row["stream"] = bool(row["stream"])
        return rows[0] if rows else None

    async def insert_key(self, k: KeyRecord) -> None:
        validate_key(k)
        sql, params = keysql.insert_key_sql(DIALECT), keysql.key_params(k)
        await self._run(lambda db: db.execute(sql, params))

    async def _keys(self, column: str | None, value: str | None) -> list[KeyRecord]:
        sql = keysql.select_key_sql(DIALECT, column)
        rows = await self._fetch(sql, [] if column is None else [value])
        return [keysql.row_to_key(r) for r in rows]

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return next(iter(await self._keys("id", key_id)), None)

    async def get_key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        return next(iter(await self._keys("secret_hash", secret_hash)), None)

    async def list_keys(self, *, tenant: str | None = None) -> list[KeyRecord]:
        return await self._keys(None if tenant is None else "tenant", tenant)

    async def update_key(self, key_id: str, **fields: Any) -> KeyRecord | None:
        if fields:
            sql, params = keysql.update_key_sql(DIALECT, key_id, fields)
            await self._run(lambda db: db.execute(sql, params))
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str, at: float) -> bool:
        sql = keysql.revoke_key_sql(DIALECT)
        return await self._run(lambda db: db.execute(sql, (float(at), key_id)).rowcount == 1)

    async def ping(self) -> bool:
        try:
            return await self._run(lambda db: db.execute("SELECT 1").fetchone()[0] == 1)
        except StorageError:
            return False

    async def close(self) -> None:
        db, executor = self._db, self._executor
        self._db, self._executor = None, None
        if executor is not None:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(executor, db.close)
            executor.shutdown(wait=True)
