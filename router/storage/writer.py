"""``UsageWriter``: takes usage rows off the request path and writes them in batches, losing none.

``submit`` only appends to a bounded in-memory deque (or, past the bound, to the spill file) and never
blocks or raises. A background task writes batches when ``batch_size`` rows are waiting or every
``flush_interval`` seconds. A failed write puts its batch back and retries with exponential backoff;
rows beyond the memory bound go to the spill file, which is replayed (memory first) once writes succeed
again. ``close`` drains what it can and spills the rest.

Text a database cannot store never costs a row: ``storable`` escapes NUL as the six characters ``\\u0000``
(PostgreSQL refuses NUL in TEXT) and replaces a lone surrogate with U+FFFD (not UTF-8 at all), in every
text column, on the way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from router.storage.errors import StorageDataError
from router.storage.models import DAY, USAGE_COLUMNS, Storage, UsageRecord
from router.storage.spill import SpillFile

log = logging.getLogger("deja.storage")

MAX_BACKOFF = 5.0
WRITE_TIMEOUT = 15.0
RETENTION_EVERY = 3600.0
MAX_METADATA_BYTES = 4096  # a request's stored ``metadata`` (JSON text) is capped at this
# Errors that mean "these values are bad", not "the database is away": the batch is bisected and the bad row
# rejected (counted, logged) instead of blocking every row behind it forever.
_ROW_ERRORS = (StorageDataError, TypeError, ValueError, AttributeError)


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as every backend can store it: NUL escaped as ``\\u0000``, lone surrogates as U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _clean_text(record: UsageRecord) -> UsageRecord:
    """``record``, or a copy whose text columns are ``storable``."""
    dirty = {}
    for name in USAGE_COLUMNS:
        value = getattr(record, name)
        if isinstance(value, str) and (clean := storable(value)) is not value:
            dirty[name] = clean
    if not dirty:
        return record
    clone = copy.copy(record)
    for name, value in dirty.items():
        setattr(clone, name, value)
    return clone


def cap_body(text: str | None, max_bytes: int) -> str | None:
    """``text`` if it fits in ``max_bytes`` UTF-8 bytes, else a JSON stub keeping its head (valid JSON)."""
    if text is None or len(text) * 4 <= max_bytes:
        return text
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    keep = max(0, max_bytes - 64)
    while True:
        head = raw[:keep].decode("utf-8", "ignore")
        stub = json.dumps({"truncated": True, "bytes": len(raw), "head": head}, ensure_ascii=False)
        if len(stub.encode()) <= max_bytes or keep == 0:
            return stub
        keep //= 2


class UsageWriter:
    def __init__(
        self,
        storage: Storage,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        spill_path: str | None = None,
        max_body_bytes: int = 32_768,
        store_bodies: bool = True,
        retention_days: float | None = None,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = storage
        self.max_queue, self.batch_size, self.flush_interval = max_queue, batch_size, flush_interval
        self.max_body_bytes, self.store_bodies = max_body_bytes, store_bodies
        self.retention_days = retention_days
        self._on_written, self._on_error = on_written, on_error
        self._queue: deque[UsageRecord] = deque()
        self._spill = SpillFile(spill_path) if spill_path else None
        self._inflight = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_lock = asyncio.Lock()
        self._closed = False
        # Counters for metrics (the router exports them).
        self.written = 0  # rows inserted
        self.duplicates = 0  # rows the storage already had (replays)
        self.errors = 0  # failed write attempts
        self.spilled = 0  # rows sent to the spill file
        self.dropped = 0  # rows lost: past the memory bound with no spill file
        self.rejected = 0  # rows the database refused as invalid (isolated by bisecting their batch)
        self.healthy = True  # the last write succeeded

    @property
    def depth(self) -> int:
        """Rows waiting: in memory, being written, and in the spill file."""
        return len(self._queue) + self._inflight + (self._spill.pending if self._spill else 0)

    def submit(self, record: UsageRecord) -> None:
        """Queue one row; call from the event loop's thread. Never blocks on the database, never raises."""
        try:
            record = self._prepare(record)
            if self._closed or len(self._queue) >= self.max_queue:
                self._overflow(record)
                return
            self._queue.append(record)
            if len(self._queue) >= self.batch_size:
                self._wake.set()
        except Exception as exc:  # never let bookkeeping fail a request
            self.dropped += 1
            self._report_error(f"submit:{type(exc).__name__}")

    def _prepare(self, record: UsageRecord) -> UsageRecord:
        record = _clean_text(record)
        if record.metadata is not None and len(record.metadata) * 4 > MAX_METADATA_BYTES:
            record = copy.copy(record)
            record.metadata = cap_body(record.metadata, MAX_METADATA_BYTES)
        req, resp = record.request_body, record.response_body
        if req is None and resp is None:
            return record
        if self.store_bodies:
            req, resp = cap_body(req, self.max_body_bytes), cap_body(resp, self.max_body_bytes)
            if req is record.request_body and resp is record.response_body:
                return record
        else:
            req = resp = None
        clone = copy.copy(record)  # the caller's record is left untouched (cheaper than dataclasses.replace)
        clone.request_body, clone.response_body = req, resp
        return clone

    def _overflow(self, record: UsageRecord) -> None:
        if self._spill is not None:
            self._spill.append(record)
            self.spilled += 1
            if self._closed:  # no background task will flush it any more
                self._spill.flush()
        else:
            self.dropped += 1
            self._report_error("dropped")

    def _report_error(self, kind: str) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(kind)

    async def start(self) -> None:
        if self._tasks:
            return
        self._closed = False
        self._stop.clear()
        if self._spill is not None:
            self._spill.open()
        self._tasks.append(asyncio.create_task(self._run(), name="deja-usage-writer"))
        if self.retention_days is not None:
            self._tasks.append(asyncio.create_task(self._retention_loop(), name="deja-usage-retention"))

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if failures:
                delay = min(self.flush_interval * 2**failures, MAX_BACKOFF)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                ok = await self._drain()
            except Exception as exc:  # e.g. the spill file's disk is full: keep the loop alive, retry later
                log.exception("usage writer loop error")
                self._report_error(f"writer:{type(exc).__name__}")
                ok = False
            failures = 0 if ok else min(failures + 1, 20)  # 2**n stays finite

    async def _drain(self) -> bool:
        """Write everything waiting in memory, then replay the spill file; False at the first failed write."""
        async with self._drain_lock:
            return await self._drain_locked()

    async def _drain_locked(self) -> bool:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._inflight = len(batch)
            try:
                left = await self._write(batch)
            finally:
                self._inflight = 0
            if left:
                self._requeue(left)
                return False
        while self._spill is not None and self._spill.pending and not self._queue:
            records, offset, lines = self._spill.read_batch(self.batch_size)
            if records and await self._write(records):
                return False  # the rows stay in the file, from the same offset
            self._spill.commit(offset, lines)
        if self._spill is not None:
            self._spill.flush()
        return True

    def _requeue(self, batch: list[UsageRecord]) -> None:
        self._queue.extendleft(reversed(batch))
        while self._spill is not None and len(self._queue) > self.max_queue:
            self._overflow(self._queue.pop())

    async def _write(self, batch: list[UsageRecord]) -> list[UsageRecord]:
        """Write ``batch``; returns the rows still to write (empty when done), retried later by the caller."""
        try:
            inserted = await asyncio.wait_for(self.storage.write_usage(batch), WRITE_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except _ROW_ERRORS as exc:
            self._failed(exc)
            if len(batch) == 1:
                self.rejected += 1
                log.error("usage row %s rejected by storage, dropped: %s", batch[0].request_id, exc)
                self._report_error("rejected")
                return []
            mid = len(batch) // 2
            left = await self._write(batch[:mid])
            return left + batch[mid:] if left else await self._write(batch[mid:])
        except Exception as exc:
            self._failed(exc)
            return batch
        if not self.healthy:
            log.info("usage writes recovered; %d rows still waiting", self.depth)
        self.healthy = True
        self.written += inserted
        self.duplicates += len(batch) - inserted
        if self._on_written is not None:
            with contextlib.suppress(Exception):
                self._on_written(inserted)
        return []

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.healthy:
            log.warning("usage write failed, rows wait and will be retried: %s", exc)
        self.healthy = False
        self._report_error(type(exc).__name__)

    async def _retention_loop(self) -> None:
        assert self.retention_days is not None
        while not self._stop.is_set():
            try:
                await self.storage.delete_older_than(time.time() - self.retention_days * DAY)
            except Exception as exc:
                log.warning("usage retention failed: %s", exc)
                self._report_error(f"retention:{type(exc).__name__}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RETENTION_EVERY)

    async def flush(self) -> bool:
        """Write everything waiting now (memory and spill); True when nothing is left."""
        return await self._drain() and self.depth == 0

    async def close(self) -> None:
        self._stop.set()
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        drained = await self._drain()
        if not drained and self._queue:
            log.warning("usage storage unavailable at shutdown: spilling %d rows", len(self._queue))
            while self._queue:
                self._overflow(self._queue.popleft())
        self._closed = True
        if self._spill is not None:
            self._spill.close()
