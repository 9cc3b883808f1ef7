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


def test_long_lines_are_normalised_in_pieces_with_the_same_result() -> None:
    """Cut at single spaces between words, the inner-space rule gives what one call over the line gives."""
    import random

    from compression import text

    rng = random.Random(1)
    pieces = ["w", "x", " ", "  ", "   ", "\t", "ab ", "  c", "é "]
    for size in (10, 1_000, 70_000, 200_000):
        for _ in range(5):
            line = "".join(rng.choice(pieces) for _ in range(size))
            assert text._inner_spaces(line) == text._INNER_SPACES.sub(" ", line)
    long_line = "w " * 100_000
    assert len(long_line) > 2 * text._CHUNK and text._inner_spaces(long_line) == long_line
