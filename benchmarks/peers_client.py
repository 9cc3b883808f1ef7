"""The HTTP client side of the peer benchmarks: one request (``send``), a load at a concurrency (``drive``),
and their summaries. The server's CPU time is read from /proc around the measured part."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.procs import cpu_seconds


@dataclass
class Reply:
    """One answer as the client saw it. ``status`` 0: the request raised (``error`` says what)."""

    status: int
    total: float
    ttfc: float | None = None
    cache: str = ""
    response_id: str = ""
    litellm_cache_key: bool = False
    error: str = ""
    index: int = -1  # which request of the load (``body(index)``)


@dataclass
class Target:
    name: str
    base_url: str  # ".../v1"
    model: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Load:
    replies: list[Reply]
    wall: float
    cpu: float  # server CPU seconds spent during the load (warm-up excluded)

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.status == 200]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank, as ``overhead.py``)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(seconds: list[float]) -> dict[str, float] | None:
    """p50 / p99 / mean in milliseconds; None for no values."""
    if not seconds:
        return None
    return {"p50_ms": pct(seconds, 0.5) * 1000, "p99_ms": pct(seconds, 0.99) * 1000,
            "mean_ms": statistics.fmean(seconds) * 1000}


async def send(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str],
               want_id: bool = False) -> Reply:
    """POST one chat completion; time to the full answer (streams: to their end) and to the first data chunk."""
    start = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as r:
            ttfc = None
            response_id = ""
            if r.status == 200 and body.get("stream"):
                async for line in r.content:
                    if ttfc is None and line.startswith(b"data: "):
                        ttfc = time.perf_counter() - start
                        if want_id:
                            response_id = str(json.loads(line[6:]).get("id", ""))
            else:
                data = await r.read()
                if want_id and r.status == 200:
                    response_id = str(json.loads(data).get("id", ""))
            return Reply(r.status, time.perf_counter() - start, ttfc, r.headers.get("X-Deja-Cache", ""),
                         response_id, "x-litellm-cache-key" in r.headers)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Reply(0, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")


async def drive(target: Target, body: Callable[[int], dict[str, Any]], n: int, concurrency: int,
                want_id: bool = False) -> Load:
    """``n`` requests (``body(i)``) from ``concurrency`` workers over ``concurrency`` kept-alive connections, after
    a warm-up that opens them; the server's CPU time is read around the measured part only."""
    url = target.base_url + "/chat/completions"
    replies: list[Reply] = []
    counter = iter(range(n))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        async def worker() -> None:
            for i in counter:
                reply = await send(session, url, body(i), target.headers, want_id)
                reply.index = i
                replies.append(reply)

        warm = {**body(0), "stream": False, "messages": [{"role": "user", "content": f"warm-up {time.time_ns()}"}]}
        await asyncio.gather(*(send(session, url, warm, target.headers) for _ in range(min(concurrency, n))))
        cpu = cpu_seconds(target.pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = cpu_seconds(target.pid) - cpu
    return Load(replies, wall, cpu)


def hit_stats(load_list: list[Load], is_hit: Callable[[Reply], bool]) -> dict[str, Any]:
    replies = [r for load in load_list for r in load.replies]
    hits = [r for r in replies if r.status == 200 and is_hit(r)]
    wall = sum(load.wall for load in load_list)
    return {"requests": len(replies), "hits": len(hits), "errors": sum(1 for r in replies if r.status != 200),
            "latency": summary([r.total for r in hits]), "hits_per_s": len(hits) / wall if wall else 0.0,
            "cpu_ms_per_request": 1000 * sum(load.cpu for load in load_list) / max(1, len(replies))}
