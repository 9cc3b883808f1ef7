"""Shared test helpers: deterministic usage records, expected aggregates, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from router.storage import Storage, StorageUnavailableError, UsageFilter, UsageRecord

BASE = datetime(2026, 1, 10, tzinfo=UTC).timestamp()  # a UTC midnight
DAY = 86_400.0
TENANTS = ("acme", "globex")
KEYS = ("key_a", "key_b", None)
MODELS = ("gpt-4o-mini", "claude-haiku")
CACHES = ("exact", "semantic", "miss", "bypass", "off")


def make_records(n: int, *, start: float = BASE, span: float = 3 * DAY, seed: int = 7, prefix: str = "req"):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cache = rng.choice(CACHES)
        status = rng.choice((200, 200, 200, 429, 502))
        out.append(
            UsageRecord(
                request_id=f"{prefix}-{i:06d}",
                ts=start + rng.random() * span,
                route=rng.choice(("chat", "embeddings")),
                key_id=rng.choice(KEYS),
                tenant=rng.choice(TENANTS),
                end_user=rng.choice((None, "user-1", "user-2")),
                model=rng.choice(MODELS),
                deployment="dep-1",
                provider="openai",
                cache=cache,
                similarity=0.93 if cache == "semantic" else None,
                prompt_tokens_client=rng.randint(1, 2000),
                prompt_tokens_sent=rng.randint(0, 1500),
                completion_tokens=rng.randint(0, 500),
                cost_usd=round(rng.random() / 100, 6),
                saved_cache_usd=round(rng.random() / 200, 6),
                saved_compression_usd=round(rng.random() / 400, 6),
                latency_ms=rng.uniform(5, 900),
                ttft_ms=rng.choice((None, 42.0)),
                status=status,
                error_type=None if status == 200 else "upstream_error",
                stream=rng.random() < 0.5,
                request_body='{"messages": [{"role": "user", "content": "hi"}]}',
                response_body='{"choices": []}',
            )
        )
    return out


def group_value(r: UsageRecord, group_by: str | None) -> Any:
    if group_by is None:
        return None
    if group_by == "day":
        return datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%d")
    return {"model": r.model, "key": r.key_id, "tenant": r.tenant}[group_by]


def expected_summary(records: Iterable[UsageRecord], group_by: str | None) -> dict[Any, dict[str, float]]:
    out: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        g = out[group_value(r, group_by)]
        g["requests"] += 1
        g["prompt_tokens"] += r.prompt_tokens_client
        g["completion_tokens"] += r.completion_tokens
        g["cost_usd"] += r.cost_usd
        g["saved_usd"] += r.saved_cache_usd + r.saved_compression_usd
        g["cache_hits"] += r.cache in ("exact", "semantic")
    return out


async def raw_count(storage: Storage) -> int:
    """Rows in usage_log (a sub-day bound forces the raw-row path)."""
    return (await storage.usage_summary(UsageFilter(since=0.5), None))[0]["requests"]


async def rollup_count(storage: Storage) -> int:
    return sum(r["requests"] for r in await storage.rollup_rows(UsageFilter()))


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


class FlakyStorage:
    """Wraps a real storage; while ``down`` every write fails as if the database were unreachable."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.down = False
        self.failed_writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write_usage(self, rows):
        if self.down:
            self.failed_writes += 1
            raise StorageUnavailableError("simulated outage")
        return await self.inner.write_usage(rows)


class TcpProxy:
    """A TCP relay in front of PostgreSQL that can be cut (live connections reset, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def cut(self) -> None:
        self.is_cut = True
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
