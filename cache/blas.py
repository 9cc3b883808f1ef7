"""Exact nearest rows of a matrix, on the event loop: the product runs with single-threaded BLAS once it is large."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

# Above this many matrix elements, run the product with single-threaded BLAS: on a small, busy machine
# OpenBLAS's threads make a 10k x 384 product ~10x slower, and it runs on the event loop.
SINGLE_THREAD_ABOVE = 100_000

try:  # threadpoolctl comes with sentence-transformers (via scikit-learn); optional here
    from threadpoolctl import ThreadpoolController

    _BLAS: Any = ThreadpoolController()
except ImportError:  # pragma: no cover - depends on the environment
    _BLAS = None


_pinned = False


def pin_single_thread() -> None:
    """Run BLAS on one thread for the rest of the process, so no product pays threadpoolctl's switch there and
    back (~30 us, as much as the product over 2,048 gate rows). For the server, where every product of the index
    runs on the event loop: ``deja serve`` calls it at start."""
    global _pinned
    if _BLAS is not None and not _pinned:
        _BLAS.limit(limits=1, user_api="blas")  # never restored: the limit holds until the process ends
        _pinned = True


def blas_limit(elements: int) -> contextlib.AbstractContextManager[Any]:
    if _BLAS is None or _pinned or elements <= SINGLE_THREAD_ABOVE:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


def nearest_rows(matrix: np.ndarray, query: np.ndarray, k: int,
                 live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the ``k`` rows most similar to ``query``, best first, ties by row; every row's similarity). ``live``: rows
    that may be returned (``k`` at most their number); the others get ``-inf``."""
    with blas_limit(matrix.size):
        sims = matrix @ query
    if live is not None:
        sims[~live] = -np.inf
    if len(sims) > k:
        top = np.argpartition(-sims, k - 1)[:k]
    else:
        top = np.flatnonzero(live) if live is not None else np.arange(len(sims))
    return top[np.argsort(-sims[top], kind="stable")], sims
