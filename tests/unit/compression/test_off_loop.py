"""A long prompt is compressed and counted off the event loop, with the same result as inline."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from compression import Level, compress
from compression import core as compression_core


def _messages(words: int) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be  brief."},
            {"role": "user", "content": "Tell me   about this:\n\n\n" + "lorem ipsum dolor sit amet " * words}]


@pytest.fixture
def counting_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    original = compression_core.count_tokens

    def spy(messages: list[dict[str, Any]], model: str) -> int:
        seen.append(threading.get_ident())
        return original(messages, model)

    monkeypatch.setattr(compression_core, "count_tokens", spy)
    return seen


@pytest.mark.parametrize("level", [Level.OFF, Level.LOSSLESS, Level.AUTO])
async def test_a_long_prompt_is_counted_off_the_loop(counting_threads: list[int], level: Level) -> None:
    messages = _messages(2000)  # ~54,000 characters
    assert compression_core._chars(messages) > compression_core.OFF_LOOP_CHARS
    await compress(messages, level=level, model="gpt-4o-mini")
    assert counting_threads and threading.get_ident() not in counting_threads


async def test_a_short_prompt_stays_on_the_loop(counting_threads: list[int]) -> None:
    await compress(_messages(10), level=Level.LOSSLESS, model="gpt-4o-mini")
    assert counting_threads and set(counting_threads) == {threading.get_ident()}


@pytest.mark.parametrize("level", [Level.LOSSLESS, Level.AUTO])
async def test_off_the_loop_gives_the_same_result(monkeypatch: pytest.MonkeyPatch, level: Level) -> None:
    messages = _messages(2000)
    away = await compress(messages, level=level, model="gpt-4o-mini")
    monkeypatch.setattr(compression_core, "OFF_LOOP_CHARS", 10**9)
    inline = await compress(messages, level=level, model="gpt-4o-mini")
    assert away == inline
