"""Matrix-vector products on the event loop run with single-threaded BLAS once they are large enough."""

from __future__ import annotations

import contextlib
from typing import Any

# Above this many matrix elements, run the product with single-threaded BLAS: on a small, busy machine
# OpenBLAS's threads make a 10k x 384 product ~10x slower, and it runs on the event loop.
SINGLE_THREAD_ABOVE = 100_000

try:  # threadpoolctl comes with sentence-transformers (via scikit-learn); optional here
    from threadpoolctl import ThreadpoolController

    _BLAS: Any = ThreadpoolController()
except ImportError:  # pragma: no cover - depends on the environment
    _BLAS = None


def blas_limit(elements: int) -> contextlib.AbstractContextManager[Any]:
    if _BLAS is None or elements <= SINGLE_THREAD_ABOVE:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")
