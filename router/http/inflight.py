"""A budget of request-body bytes being worked on at once, so a burst of large prompts cannot take the memory.

A request's body is multiplied many times while it is answered (the bytes, the parsed JSON, normalised and
compressed copies, the upstream call's encoding, the stored row), so sixty-four 1 MB prompts at once took
gigabytes. ``inflight_middleware`` admits a request whose ``Content-Length`` is over ``SMALL_BODY_BYTES`` only
while the bytes of the large bodies in flight stay within ``deja.inflight_body_bytes``; the others wait
(first come, first served) for up to ``WAIT_SECONDS``, then get a 503 with ``Retry-After``. Small requests
never wait, so a burst of large prompts does not delay them. A body larger than the whole budget runs alone.
``0`` turns the budget off.

When the last large body is done, the C heap is trimmed (glibc ``malloc_trim``, off the loop): freed memory
goes back to the system instead of staying in the process after a burst. ``limit_malloc_arenas`` (called once
at start-up) caps glibc's per-thread arenas, whose fragments otherwise keep a burst's peak resident.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from router.appkeys import METRICS
from router.http import errors as err

log = logging.getLogger("deja.http")

SMALL_BODY_BYTES = 64 * 1024
WAIT_SECONDS = 60.0
M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would); True when applied. Call before threads start."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1)


def trim_heap() -> None:
    """Collect Python's cycles (so emptied object arenas are freed), then give free C heap back to the system."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def freeze_startup_objects() -> None:
    """Take every object alive once start-up is done (LiteLLM's modules and the models: about 300,000 objects)
    out of the cyclic GC's sight, after collecting start-up's garbage. Otherwise each full collection walks them
    all: ~200 ms with the event loop stopped, a few times a minute under load (measured). They are still freed
    by reference counting."""
    gc.collect()
    gc.freeze()


class BodyBudget:
    """Bytes of large bodies in flight, at most ``max_bytes``; FIFO waiters."""

    def __init__(self, max_bytes: int, *, small_bytes: int = SMALL_BODY_BYTES, wait_seconds: float = WAIT_SECONDS,
                 on_idle: Callable[[], None] | None = None) -> None:
        self.max_bytes, self.small_bytes, self.wait_seconds = max_bytes, small_bytes, wait_seconds
        self.used = 0
        self.waited = 0  # requests that had to wait, for the metric
        self.refused = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._on_idle = on_idle

    def cost(self, content_length: int | None, max_body: int) -> int:
        """What a request holds: its length (unknown: the largest body allowed), capped at the whole budget."""
        size = max_body if content_length is None else content_length
        if self.max_bytes <= 0 or size <= self.small_bytes:
            return 0
        return min(size, self.max_bytes)

    async def acquire(self, n: int) -> bool:
        """Hold ``n`` bytes; True when it had to wait. ``TimeoutError`` after ``wait_seconds``."""
        if n == 0:
            return False
        if not self._waiters and self.used + n <= self.max_bytes:
            self.used += n
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, waiter))
        self.waited += 1
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.wait_seconds)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(n)  # granted just as we gave up: give it back
            else:
                waiter.cancel()
                self._waiters = deque(w for w in self._waiters if w[1] is not waiter)
                self._grant()
            raise
        return True

    def release(self, n: int) -> None:
        if n == 0:
            return
        self.used -= n
        self._grant()
        if self.used == 0 and not self._waiters and self._on_idle is not None:
            self._on_idle()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.max_bytes:
            n, waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += n
                waiter.set_result(None)


BODY_BUDGET = web.AppKey("body_budget", BodyBudget)


TRIM_AGAIN_SECONDS = 5.0


def make_budget(app: web.Application, max_bytes: int) -> BodyBudget:
    """The app's budget; when idle after large bodies, the heap is trimmed in a worker thread, and once more a
    few seconds later if still idle (the last answers' usage rows and cache stores are written just after)."""
    def trim() -> None:
        asyncio.get_running_loop().run_in_executor(None, trim_heap)

    def idle() -> None:
        trim()
        asyncio.get_running_loop().call_later(TRIM_AGAIN_SECONDS, lambda: None if budget.used else trim())

    budget = BodyBudget(max_bytes, on_idle=idle)
    app[BODY_BUDGET] = budget
    return budget


def inflight_middleware(max_body: int) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        budget = request.app.get(BODY_BUDGET)
        if budget is None or not request.body_exists:
            return await handler(request)
        n = budget.cost(request.content_length, max_body)
        started = time.monotonic()
        try:
            waited = await budget.acquire(n)
        except TimeoutError:
            budget.refused += 1
            request.app[METRICS].body_budget.labels(outcome="refused").inc()
            raise err.ServiceUnavailableError(
                f"deja is busy with other large requests (over {budget.max_bytes} bytes of bodies in flight); "
                "retry shortly.", code="server_busy", headers={"Retry-After": "5"}) from None
        if waited:
            request.app[METRICS].body_budget.labels(outcome="admitted").inc()
            log.info("a %d-byte body waited %.2f s for the in-flight budget", n, time.monotonic() - started)
        try:
            return await handler(request)
        finally:
            budget.release(n)

    return middleware
