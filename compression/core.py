"""``compress``: the entry point the request flow calls before the cache.

Every step is linear in the prompt (token counting, normalisation, passage scoring). A prompt of more than
``OFF_LOOP_CHARS`` characters is compressed and counted in a worker thread, so the event loop keeps answering
other requests meanwhile (a 1 MB prompt costs about a second of CPU); only the embedding scorer of ``auto``,
which awaits the app's embedder, stays on the loop. Those threads are one lane (``_LANE``, one thread): most of
the work holds the GIL, and every extra thread wanting it slows the event loop's turns; a burst of large prompts
queues there instead.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from compression.errors import CompressionError
from compression.history import model_context_window, prompt_budget, trim_history
from compression.lossless import check_messages, normalize_messages, protected_prefix
from compression.selection import select_passages
from compression.tokens import REPLY_PRIMING, count_text_tokens, count_tokens, message_tokens
from compression.values import CompressionOptions, CompressionReport, EmbedFn, Level

_DEFAULT_OPTIONS = CompressionOptions()


def _last_user_index(messages: list[dict[str, Any]]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


async def _auto(
    messages: list[dict[str, Any]], *, protected: int, model: str, embed: EmbedFn | None,
    options: CompressionOptions,
) -> tuple[list[dict[str, Any]], int, int]:
    """Passage selection in the last user message, then history trimming; returns counts dropped."""
    passages_dropped = 0
    target = _last_user_index(messages)
    scorer_ready = embed is not None or options.auto_scorer == "lexical"
    if scorer_ready and target is not None and target >= protected:
        selection = await select_passages(
            messages[target], embed, options, lambda text: count_text_tokens(text, model)
        )
        if selection is not None:
            messages = [*messages[:target], selection.message, *messages[target + 1 :]]
            passages_dropped = selection.passages_dropped
    window = options.context_window or model_context_window(model)
    if window is None:
        return messages, passages_dropped, 0
    trimmed = trim_history(
        messages, protected=protected, budget=prompt_budget(window), block=options.history_block,
        cost=lambda message: message_tokens(message, model), overhead=REPLY_PRIMING,
    )
    return trimmed.messages, passages_dropped, trimmed.dropped


OFF_LOOP_CHARS = 32_768
_LANE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deja-compress")  # threads start on first use


def _chars(messages: list[dict[str, Any]]) -> int:
    """Characters of text in the messages (string contents and text parts); a cheap bound, no copies."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict)
                         and isinstance(p.get("text"), str))
    return total


async def compress(
    messages: list[dict[str, Any]], *, level: Level, model: str, embed: EmbedFn | None = None,
    options: CompressionOptions = _DEFAULT_OPTIONS,
) -> tuple[list[dict[str, Any]], CompressionReport]:
    """Compress a chat message list for ``model``; the input is never mutated.

    ``OFF`` returns the very same list. ``LOSSLESS`` normalises text without changing meaning. ``AUTO``
    adds query-aware selection in the last user message (with ``embed``, or with the ``lexical`` scorer,
    which needs none) and trimming of old
    history to the context window (only when the window is known). Output is deterministic, and nothing
    at or before the last ``cache_control`` marker changes. A long prompt is worked on in a worker thread.
    """
    check_messages(messages)
    try:
        level = Level(level)
    except ValueError as exc:
        raise CompressionError(f"unknown compression level {level!r}") from exc
    if _chars(messages) < OFF_LOOP_CHARS:
        return await _compress(messages, level, model, embed, options)
    if level is Level.AUTO and embed is not None and options.auto_scorer != "lexical":
        return await _compress(messages, level, model, embed, options, off_loop=True)
    work = lambda: asyncio.run(_compress(messages, level, model, None, options))  # noqa: E731
    return await asyncio.get_running_loop().run_in_executor(_LANE, work)


async def _compress(
    messages: list[dict[str, Any]], level: Level, model: str, embed: EmbedFn | None,
    options: CompressionOptions, *, off_loop: bool = False,
) -> tuple[list[dict[str, Any]], CompressionReport]:
    """``off_loop``: count and normalise in a worker thread (the ``auto`` step itself awaits ``embed`` here)."""
    original = await _run(off_loop, count_tokens, messages, model)
    if level is Level.OFF:
        return messages, CompressionReport(Level.OFF, original, original)
    result = await _run(off_loop, normalize_messages, messages)
    passages = dropped = 0
    if level is Level.AUTO:
        result, passages, dropped = await _auto(
            result, protected=protected_prefix(messages), model=model, embed=embed, options=options
        )
    report = CompressionReport(level, original, await _run(off_loop, count_tokens, result, model), passages,
                               dropped)
    return result, report


async def _run(off_loop: bool, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_LANE, fn, *args) if off_loop else fn(*args)
