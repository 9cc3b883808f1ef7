"""RedisStore: entries shared by every replica through Redis, vectors searched in a local index.

Redis (7.0, no vector module) is the source of truth: one hash per entry with its own expiry (PEXPIRE),
a sorted set of entry ids by last use (LRU), a sorted set by expiry time, and a stream of index changes
(``add`` with the vector, ``del``), trimmed with ``MAXLEN ~``. Each replica mirrors the vectors in a local
:class:`~cache.index.VectorIndex` kept current by a background task that tails the stream (``XREAD BLOCK``),
so a lookup never pulls a scope over the network: search is local, then candidates are fetched by id.

The local index is rebuilt by SCAN of the entry keys on start, after any Redis error (the tail retries with
backoff), when the generation key changed or vanished (Redis restarted empty, or was flushed), and when the
tail may have fallen behind the trimmed stream. Local rows whose entry is gone are dropped when a fetch
finds them missing, or when their expiry time passes.

Writes, evictions and deletes are atomic Lua scripts. They build entry key names from the prefix passed in
``ARGV`` (fine on a single Redis; not Redis Cluster compatible). All key names come from :class:`Keys`.
Every Redis failure (or a call slower than ``op_timeout``) surfaces as ``CacheUnavailableError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from cache.errors import CacheConfigError, CacheError, CacheUnavailableError
from cache.index import DEFAULT_ANN_MIN_ROWS, Match, VectorIndex
from cache.redis_scripts import LUA_CLEAR, LUA_COUNT, LUA_KEEP_DENSE, LUA_PUT
from cache.store import CacheEntry, StoreCounts, check_capacity, matches

log = logging.getLogger(__name__)
T = TypeVar("T")

class Keys:
    """Every Redis key name the store uses, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.entry_prefix = f"{prefix}e:"
        self.lru = f"{prefix}lru"
        self.expiry = f"{prefix}exp"
        self.stream = f"{prefix}log"
        self.generation = f"{prefix}gen"

    def entry(self, entry_id: str) -> str:
        return self.entry_prefix + entry_id

    @property
    def entry_pattern(self) -> str:
        return self.entry_prefix + "*"

    @property
    def bookkeeping(self) -> list[str]:
        """KEYS[1..3] of every script."""
        return [self.lru, self.expiry, self.stream]


def make_client(url: str, socket_timeout: float) -> aioredis.Redis:
    """A client that fails fast: short socket timeouts, one immediate retry on a dropped connection."""
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    return aioredis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, retry=retry
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_entry(
    entry: CacheEntry, vector: np.ndarray | None, dense: np.ndarray | None = None
) -> list[str | bytes]:
    fields: list[str | bytes] = [
        "id", entry.id, "scope", entry.scope_key, "resp", json.dumps(entry.response, separators=(",", ":")),
        "created", repr(entry.created_at), "expires", repr(entry.expires_at),
        "ns", entry.namespace, "model", entry.model,
    ]  # fmt: skip
    if entry.query is not None:
        fields += ["query", entry.query]
    if vector is not None:
        fields += ["vec", np.asarray(vector, dtype=np.float32).tobytes()]
    if dense is not None:
        fields += ["dense", np.asarray(dense, dtype=np.float32).tobytes()]
    return fields


def decode_entry(raw: dict[bytes, bytes]) -> CacheEntry:
    query = raw.get(b"query")
    dense = raw.get(b"dense")
    return CacheEntry(
        id=_text(raw[b"id"]),
        scope_key=_text(raw[b"scope"]),
        query=_text(query) if query is not None else None,
        response=json.loads(raw[b"resp"]),
        created_at=float(raw[b"created"]),
        expires_at=float(raw[b"expires"]),
        namespace=_text(raw[b"ns"]),
        model=_text(raw[b"model"]),
        dense=np.frombuffer(dense, dtype=np.float32).copy() if dense else None,
    )


class RedisStore:
    """A :class:`~cache.store.CacheStore` shared by replicas through one Redis.

    Given a URL, it makes its own fail-fast client (and closes it); a client passed in must use
    ``decode_responses=False``. ``counts().scopes`` is the number of scopes in this replica's local index.
    """

    def __init__(
        self,
        redis_url_or_client: str | aioredis.Redis,
        *,
        prefix: str,
        capacity: int = 100_000,
        sync_interval: float = 0.2,
        socket_timeout: float = 0.5,
        stream_maxlen: int = 10_000,
        max_backoff: float = 2.0,
        read_batch: int = 1000,
        dim: int | None = None,
        ann_min_rows: int | None = DEFAULT_ANN_MIN_ROWS, ann_dtype: str = "f16",
    ) -> None:
        """``dim``: the searched vectors' dimension (rows of another dimension in Redis, say from another
        embedder, are skipped); ``ann_min_rows``: see :class:`~cache.index.VectorIndex`."""
        self._capacity = check_capacity(capacity)
        if isinstance(redis_url_or_client, str) and sync_interval >= socket_timeout:
            raise CacheConfigError("sync_interval (the XREAD block time) must be below socket_timeout")
        self._own_client = isinstance(redis_url_or_client, str)
        client = redis_url_or_client
        self._client = make_client(client, socket_timeout) if isinstance(client, str) else client
        self.keys = Keys(prefix)
        self._block_ms = max(1, int(sync_interval * 1000))
        self._op_timeout = 3 * socket_timeout
        self._maxlen = stream_maxlen
        self._max_backoff = max_backoff
        self._batch = read_batch
        self._put = self._client.register_script(LUA_PUT)
        self._count = self._client.register_script(LUA_COUNT)
        self._clear = self._client.register_script(LUA_CLEAR)
        self._keep_dense = self._client.register_script(LUA_KEEP_DENSE)
        self._dim, self._ann_min, self._ann_dtype = dim, ann_min_rows, ann_dtype
        self._index = self._new_index()
        self._skipped = 0
        self._last_id = "0-0"
        self._seen = 0  # stream events ever added, up to and including _last_id
        self._generation: str | None = None
        self._need_resync = True
        self._tail_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def backend(self) -> str:
        return "redis"

    @property
    def capacity(self) -> int:
        return self._capacity

    def _new_index(self) -> VectorIndex:
        return VectorIndex(self._dim, ann_min_rows=self._ann_min, ann_dtype=self._ann_dtype)

    @property
    def indexed(self) -> int:
        """Rows in this replica's local vector index."""
        return len(self._index)

    async def _guard(self, call: Awaitable[T], extra_time: float = 0.0) -> T:
        """Run one Redis call, translating every failure (and slowness) into CacheUnavailableError."""
        try:
            async with asyncio.timeout(self._op_timeout + extra_time):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheUnavailableError(f"redis unavailable: {type(exc).__name__}: {exc}") from exc

    def _script_args(self, *extra: Any) -> list[Any]:
        return [self.keys.entry_prefix, self._maxlen, *extra]

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the local index (if Redis is reachable) and start tailing the change stream."""
        if self._tail_task is not None:
            return
        try:
            await self._resync()
        except CacheError as exc:
            log.warning("cache: initial sync from redis failed, will retry: %s", exc)
        self._tail_task = asyncio.create_task(self._tail(), name=f"deja-cache-tail:{self.keys.prefix}")

    async def close(self) -> None:
        """Stop the tail task and release the client (if this store created it)."""
        self._closing = True
        task, self._tail_task = self._tail_task, None
        while task is not None and not task.done():
            # A cancellation can be absorbed by a Redis call timing out at the same moment; the loop also
            # checks ``_closing``, so cancelling again until done always ends it.
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if self._own_client:
            await self._client.aclose()

    # -- the CacheStore interface ----------------------------------------------------------------------

    async def get(self, entry_id: str, now: float) -> CacheEntry | None:
        raw = await self._guard(self._client.hgetall(self.keys.entry(entry_id)))
        if not raw:
            self._index.remove(entry_id)
            return None
        try:
            entry = decode_entry(cast(dict[bytes, bytes], raw))
        except (KeyError, ValueError) as exc:
            log.warning("cache: ignoring corrupt entry %s: %s", entry_id, exc)
            entry = None
        if entry is None or entry.expires_at <= now:
            self._index.remove(entry_id)
            return None
        return entry

    async def touch(self, entry_id: str, now: float) -> None:
        await self._guard(self._client.zadd(self.keys.lru, {entry_id: now}, xx=True))

    async def search(self, scope_key: str, vector: np.ndarray, k: int, now: float) -> list[Match]:
        return self._index.search(scope_key, vector, k, now)

    def reserve(self, scope_key: str, entry_id: str, vector: np.ndarray) -> None:
        self._index.reserve(scope_key, entry_id, vector)

    async def put(
        self, entry: CacheEntry, vector: np.ndarray | None, now: float, *, dense: np.ndarray | None = None
    ) -> None:
        ttl_ms = max(1, math.ceil((entry.expires_at - now) * 1000))
        vec = np.asarray(vector, dtype=np.float32).tobytes() if vector is not None else b""
        args = self._script_args(
            entry.id, repr(now), ttl_ms, repr(entry.expires_at), self._capacity, entry.scope_key, vec,
            *encode_entry(entry, vector, dense),
        )  # fmt: skip
        keys = [*self.keys.bookkeeping, self.keys.entry(entry.id)]
        dropped = await self._guard(self._put(keys=keys, args=args))
        if vector is not None:
            self._add_row(self._index, entry.scope_key, entry.id, vector, entry.expires_at)
        else:
            self._index.remove(entry.id)
        for entry_id in dropped:
            self._index.remove(_text(entry_id))

    async def keep_dense(self, entry_id: str, dense: np.ndarray) -> None:
        vector = np.asarray(dense, dtype=np.float32).tobytes()
        await self._guard(self._keep_dense(keys=[self.keys.entry(entry_id)], args=[vector]))

    async def clear(self, *, namespace: str | None = None, model: str | None = None) -> int:
        deleted = 0
        cursor: int = 0
        while True:
            cursor, keys = await self._guard(
                self._client.scan(cursor, match=self.keys.entry_pattern, count=self._batch)
            )
            if keys:
                deleted += await self._clear_batch(cast(list[bytes], keys), namespace, model)
            if cursor == 0:
                return deleted

    async def _clear_batch(self, keys: list[bytes], namespace: str | None, model: str | None) -> int:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["id", "ns", "model"])
        rows = await self._guard(pipe.execute())
        doomed = [
            _text(row[0])
            for row in rows
            if row[0] is not None and matches(_text(row[1] or b""), _text(row[2] or b""), namespace, model)
        ]
        if not doomed:
            return 0
        count = await self._guard(self._clear(keys=self.keys.bookkeeping, args=self._script_args(*doomed)))
        for entry_id in doomed:
            self._index.remove(entry_id)
        return int(count)

    async def counts(self, now: float) -> StoreCounts:
        entries, purged = await self._guard(
            self._count(keys=self.keys.bookkeeping, args=self._script_args(repr(now)))
        )
        for entry_id in purged:
            self._index.remove(_text(entry_id))
        return StoreCounts(entries=int(entries), scopes=self._index.scope_count)

    # -- keeping the local index current ---------------------------------------------------------------

    async def _read_generation(self) -> str | None:
        value = await self._guard(self._client.get(self.keys.generation))
        return _text(value) if value is not None else None

    async def _current_generation(self) -> str:
        """The generation token; a new one is set when missing (fresh or restarted Redis)."""
        token = uuid.uuid4().hex
        previous = await self._guard(self._client.set(self.keys.generation, token, nx=True, get=True))
        return _text(cast(bytes, previous)) if previous is not None else token

    async def _resync(self) -> None:
        """Rebuild the local index from a SCAN of the entry keys, then tail the stream from its end."""
        generation = await self._current_generation()
        info = await self._stream_info()
        last_id = _text(info["last-generated-id"]) if info else "0-0"
        seen = int(info["entries-added"]) if info else 0
        index = self._new_index()
        self._skipped = 0
        cursor: int = 0
        while True:
            cursor, keys = await self._guard(
                self._client.scan(cursor, match=self.keys.entry_pattern, count=self._batch)
            )
            if keys:
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, ["id", "scope", "expires", "vec"])
                for entry_id, scope, expires, vec in await self._guard(pipe.execute()):
                    if entry_id is not None and vec:
                        self._add_row(index, _text(scope), _text(entry_id), vec, float(expires))
            if cursor == 0:
                break
        self._index, self._last_id, self._seen, self._generation = index, last_id, seen, generation
        self._need_resync = False
        log.info("cache: local index rebuilt from redis (%d vectors)", len(index))
        if self._skipped:
            log.warning("cache: %d entries have vectors of another dimension (another embedder or an older "
                        "deja): served by the exact tier only", self._skipped)

    def _add_row(
        self, index: VectorIndex, scope: str, entry_id: str, vec: bytes | np.ndarray, expires: float
    ) -> None:
        if index.holds(scope, entry_id, expires):
            # already there: a replica's own put comes back on the stream, or the stream came before the put's reply
            return
        vector = np.frombuffer(vec, dtype=np.float32) if isinstance(vec, bytes) else vec
        try:
            index.add(scope, entry_id, vector, expires)
        except CacheError:
            index.remove(entry_id)
            self._skipped += 1

    def _apply(self, events: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for event_id, fields in events:
            self._last_id = _text(event_id)
            self._seen += 1
            op, entry_id = fields.get(b"op"), _text(fields.get(b"id", b""))
            if op == b"add" and b"vec" in fields:
                self._add_row(
                    self._index, _text(fields[b"scope"]), entry_id, fields[b"vec"], float(fields[b"exp"])
                )
            elif op == b"del":
                self._index.remove(entry_id)

    async def _stream_info(self) -> dict[str, Any] | None:
        try:
            return await self._guard(self._client.xinfo_stream(self.keys.stream))
        except CacheUnavailableError as exc:
            if isinstance(exc.__cause__, ResponseError):  # no stream yet
                return None
            raise

    async def _lost_events(self, seen_before: int) -> bool:
        """Were events we had not read yet trimmed away? (The stream is never XDEL'd,
        so ``entries-added - length`` events were trimmed; we had read ``seen_before`` of them.)"""
        info = await self._stream_info()
        return info is not None and int(info["entries-added"]) - int(info["length"]) > seen_before

    async def _tail_once(self) -> None:
        if self._need_resync or await self._read_generation() != self._generation:
            await self._resync()
        seen_before = self._seen
        reply = await self._guard(
            self._client.xread({self.keys.stream: self._last_id}, count=self._batch, block=self._block_ms),
            extra_time=self._block_ms / 1000,
        )
        events = cast(list[tuple[bytes, dict[bytes, bytes]]], reply[0][1] if reply else [])  # type: ignore[index]
        self._apply(events)
        if events and await self._lost_events(seen_before):
            self._need_resync = True

    async def _tail(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._tail_once()
                backoff = 0.05
            except CacheError as exc:
                if self._closing:
                    return
                if not self._need_resync:
                    log.warning("cache: lost redis, will resync when it is back: %s", exc)
                self._need_resync = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
