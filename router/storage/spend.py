"""``KeySpend``: a virtual key's spend so far, for the ``x-litellm-key-spend`` header, without a database write
(or read) per request.

The base is the key's total from the daily rollup, read on a key's first request and again, in the background,
once it is ``refresh_seconds`` old; on top of it, the costs this replica recorded since that read. Another
replica's spend shows once its usage batch is written and the base is re-read; a read that fails keeps the
last value (or, never read, gives no header), it never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.storage.models import Storage

log = logging.getLogger("deja.storage")


@dataclass
class _Entry:
    base: float = 0.0
    local: float = 0.0  # recorded here since the base was read
    loaded_at: float | None = None
    loading: asyncio.Future[None] | None = None


class KeySpend:
    def __init__(self, storage: Storage, *, refresh_seconds: float = 5.0, timeout: float = 1.0,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._storage = storage
        self._refresh, self._timeout, self._max_keys, self._clock = refresh_seconds, timeout, max_keys, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, key_id: str, cost_usd: float) -> None:
        """Count a request's cost (call once per answered request, from the event loop)."""
        if cost_usd > 0:
            self._entry(key_id).local += cost_usd

    async def current(self, key_id: str) -> float | None:
        """The key's spend so far, or None when it could never be read."""
        entry = self._entry(key_id)
        if entry.loaded_at is None:
            await self._load(key_id, entry)  # the first request of a key waits for one indexed read
        elif self._clock() - entry.loaded_at >= self._refresh and entry.loading is None:
            task = asyncio.ensure_future(self._load(key_id, entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if entry.loaded_at is None:
            return None
        return entry.base + entry.local

    async def settled(self) -> None:
        """Wait for the background re-reads in progress."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _entry(self, key_id: str) -> _Entry:
        entry = self._entries.get(key_id)
        if entry is None:
            entry = self._entries[key_id] = _Entry()
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key_id)
        return entry

    async def _load(self, key_id: str, entry: _Entry) -> None:
        if entry.loading is not None:  # one read per key at a time; others wait for it
            await asyncio.shield(entry.loading)
            return
        entry.loading = asyncio.get_running_loop().create_future()
        counted = entry.local  # what the read below may already include (written in an earlier batch)
        try:
            activity = await asyncio.wait_for(self._storage.key_activity([key_id]), self._timeout)
        except Exception as exc:  # the spend header is a courtesy: keep the last value
            log.debug("key spend read failed for %s: %r", key_id, exc)
        else:
            found = activity.get(key_id)
            entry.base = found.spend_usd if found is not None else 0.0
            entry.local -= counted
            entry.loaded_at = self._clock()
        finally:
            entry.loading.set_result(None)
            entry.loading = None
