"""A deterministic stand-in embedder for replay unit tests: each text's vector is given by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cache.replay.records import ReplayRequest


class TableEmbedder:
    """Embeds from a table (rows normalised); counts the texts it was asked for."""

    def __init__(self, table: Mapping[str, Sequence[float]]) -> None:
        self.table = {t: np.asarray(v, np.float32) / np.linalg.norm(v) for t, v in table.items()}
        self.dim = len(next(iter(self.table.values())))
        self.asked: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    async def close(self) -> None:
        return None


def at_cosine(cosine: float) -> list[float]:
    """A 3-d vector whose cosine with (1, 0, 0) is ``cosine``."""
    return [cosine, float(np.sqrt(max(0.0, 1 - cosine**2))), 0.0]


def ask(text: str, ts: float, **fields: Any) -> ReplayRequest:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **fields.pop("body", {})}
    return ReplayRequest(ts=ts, body=body, **fields)
