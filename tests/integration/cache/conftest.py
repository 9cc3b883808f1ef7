"""Helpers for the Redis cache tests: a bag-of-words test embedder, polling, a private redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from cache import Scope, build_scope

IN_CI = os.environ.get("CI", "").lower() == "true"


class BagOfWordsEmbedder:
    """Test stand-in for the real embedder: hashed bag of words (shared words -> high cosine)."""

    dim = 128

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
        return out

    async def close(self) -> None:
        return None


def request(
    text: str, namespace: str = "default", model: str = "gpt-4o-mini"
) -> tuple[Scope, dict[str, Any], str | None]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    scope, query = build_scope(body, tenant="t1", namespace=namespace)
    return scope, body, query


def answer(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": text}}]}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds (a deadline, not a speed claim)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {what}")
        await asyncio.sleep(0.02)


