"""Does an embedder leave the event loop free while its model encodes?"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

LONG_TEXTS = [f"a fairly long question number {i} that the model has to encode" for i in range(64)]


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
