"""SentenceTransformerEmbedder: vectors, micro-batching, LRU, and a responsive event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cache.embedder import Embedder, EmbedderClosedError, SentenceTransformerEmbedder, _load_model  # noqa: E402
from tests.unit.cache.loop_probe import LONG_TEXTS, loop_ticks_per_encode  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def loaded_model() -> object:
    """Load the model once per session; every embedder built afterwards shares it."""
    return _load_model(None)


@pytest.fixture
async def embedder(loaded_model: object) -> AsyncIterator[SentenceTransformerEmbedder]:
    emb = await SentenceTransformerEmbedder.create()
    yield emb
    await emb.close()


async def test_shape_dtype_and_normalised(embedder: SentenceTransformerEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    vectors = await embedder.embed(["How do I learn Python?", "What is the capital of France?", ""])
    assert vectors.shape == (3, embedder.dim) == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (await embedder.embed([])).shape == (0, 384)


async def test_similar_texts_are_closer_than_unrelated(embedder: SentenceTransformerEmbedder) -> None:
    a, b, c = await embedder.embed(
        ["How can I lose weight quickly?", "What is the fastest way to lose weight?", "Who painted the Mona Lisa?"]
    )
    assert float(a @ b) > float(a @ c) + 0.3


async def test_concurrent_calls_are_batched(loaded_model: object) -> None:
    sizes: list[int] = []
    emb = await SentenceTransformerEmbedder.create(max_wait_ms=50, on_batch=lambda n, s: sizes.append(n))
    try:
        texts = [f"question number {i} about batching" for i in range(20)]
        results = await asyncio.gather(*(emb.embed([t]) for t in texts))
    finally:
        await emb.close()
    assert sum(sizes) == 20
    assert max(sizes) > 1
    assert len(sizes) < 20
    alone = await _embed_alone(texts[7])
    np.testing.assert_allclose(results[7][0], alone, atol=1e-4)


async def _embed_alone(text: str) -> np.ndarray:
    emb = await SentenceTransformerEmbedder.create()
    try:
        return (await emb.embed([text]))[0]
    finally:
        await emb.close()


async def test_max_batch_is_respected(loaded_model: object) -> None:
    sizes: list[int] = []
    emb = await SentenceTransformerEmbedder.create(max_batch=4, on_batch=lambda n, s: sizes.append(n))
    try:
        out = await emb.embed([f"text {i}" for i in range(10)])
    finally:
        await emb.close()
    assert out.shape == (10, 384)
    assert sum(sizes) == 10 and max(sizes) <= 4


async def test_repeated_texts_come_from_the_lru(loaded_model: object) -> None:
    sizes: list[int] = []
    emb = await SentenceTransformerEmbedder.create(on_batch=lambda n, s: sizes.append(n))
    try:
        first = await emb.embed(["same text", "same text", "other text"])
        assert sum(sizes) == 2  # duplicates inside one call are encoded once
        second = await emb.embed(["other text", "same text"])
    finally:
        await emb.close()
    assert sum(sizes) == 2  # nothing new was encoded
    np.testing.assert_array_equal(second[0], first[2])
    np.testing.assert_array_equal(first[0], first[1])


async def test_event_loop_keeps_running_while_encoding(loaded_model: object) -> None:
    emb = await SentenceTransformerEmbedder.create()
    try:
        during = await loop_ticks_per_encode(emb, LONG_TEXTS)
    finally:
        await emb.close()
    assert during and min(during) > 10  # the model ran off the event loop


async def test_closed_embedder_refuses(loaded_model: object) -> None:
    emb = await SentenceTransformerEmbedder.create()
    await emb.close()
    with pytest.raises(EmbedderClosedError):
        await emb.embed(["too late"])
