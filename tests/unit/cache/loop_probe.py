"""Does an embedder leave the event loop free while its model encodes?"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

LONG_TEXTS = [f"a fairly long question number {i} that the model has to encode" for i in range(64)]


class _Ticker:
    """Counts event-loop turns until stopped."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def loop_ticks_per_run(embedder: Any, texts: list[str]) -> list[int]:
    """For an ONNX embedder, whose runs go to ONNX Runtime's own thread (``_runner.start``): the event-loop
    turns counted between each run's start and its result."""
    runner = embedder._runner
    start = runner.start
    during: list[int] = []
    ticker = _Ticker()

    def counting_start(feed: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[np.ndarray]:
        before = ticker.ticks
        future = start(feed, loop)
        future.add_done_callback(lambda _: during.append(ticker.ticks - before))
        return future

    runner.start = counting_start
    try:
        await embedder.embed(texts)
    finally:
        runner.start = start
        await ticker.stop()
    return during


async def loop_ticks_per_encode(embedder: Any, texts: list[str]) -> list[int]:
    """Embed ``texts`` while a ticker task counts event-loop turns; the turns counted across each model call.

    Had the model run on the event loop, the ticker could not advance while it encodes (0 for every call).
    """
    ticks = 0
    during: list[int] = []
    encode = embedder._encode

    def counting_encode(batch: list[str]) -> np.ndarray:
        before = ticks
        out = encode(batch)
        during.append(ticks - before)
        return out

    embedder._encode = counting_encode
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await embedder.embed(texts)
    finally:
        stop.set()
        await task
        embedder._encode = encode
    return during
