"""Typed values shared by the compression package and its callers."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from compression.errors import CompressionError

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]
"""Embeds texts: returns an (n, d) float32 array whose rows are L2-normalised."""


class Level(enum.StrEnum):
    """How hard a request is compressed."""

    OFF = "off"
    LOSSLESS = "lossless"
    AUTO = "auto"


def parse_level(value: str | None, default: Level) -> Level:
    """Parse a level name (case and surrounding spaces ignored); None or "" gives ``default``."""
    if value is None or not value.strip():
        return default
    try:
        return Level(value.strip().lower())
    except ValueError as exc:
        allowed = ", ".join(level.value for level in Level)
        raise CompressionError(f"unknown compression level {value!r} (expected one of: {allowed})") from exc


@dataclass(frozen=True)
class CompressionOptions:
    """Tuning of the ``auto`` level."""

    auto_min_tokens: int = 2000
    """A message's document text must exceed this many tokens for passage selection."""
    auto_ratio: float = 4.0
    """Passage selection keeps about 1/ratio of the document tokens."""
    context_window: int | None = None
    """Prompt limit override; else the model's from LiteLLM; None and unknown mean no history trimming."""
    history_block: int = 8
    """Old history is dropped in whole blocks of this many messages, so the prompt start stays stable."""
    auto_scorer: Literal["embedding", "lexical"] = "embedding"
    """How passages are ranked: cosine of ``embed`` vectors to the question, or BM25 (no model, ~1 ms)."""

    def __post_init__(self) -> None:
        if self.auto_min_tokens < 0:
            raise CompressionError(f"auto_min_tokens must be >= 0, got {self.auto_min_tokens}")
        if not self.auto_ratio >= 1.0:
            raise CompressionError(f"auto_ratio must be >= 1, got {self.auto_ratio}")
        if self.context_window is not None and self.context_window <= 0:
            raise CompressionError(f"context_window must be positive, got {self.context_window}")
        if self.auto_scorer not in ("embedding", "lexical"):
            raise CompressionError(f"auto_scorer must be 'embedding' or 'lexical', got {self.auto_scorer!r}")
        if self.history_block < 1:
            raise CompressionError(f"history_block must be >= 1, got {self.history_block}")


@dataclass(frozen=True)
class CompressionReport:
    """What compression did to one request."""

    level: Level
    tokens_original: int
    tokens_sent: int
    passages_dropped: int = 0
    """Passages removed from the last user message by ``auto`` selection."""
    messages_dropped: int = 0
    """Old history messages removed by ``auto`` trimming."""

    @property
    def saved(self) -> int:
        return self.tokens_original - self.tokens_sent
