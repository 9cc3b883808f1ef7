"""``compress``: the entry point the request flow calls before the cache."""

from __future__ import annotations

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


async def compress(
    messages: list[dict[str, Any]], *, level: Level, model: str, embed: EmbedFn | None = None,
    options: CompressionOptions = _DEFAULT_OPTIONS,
) -> tuple[list[dict[str, Any]], CompressionReport]:
    """Compress a chat message list for ``model``; the input is never mutated.

    ``OFF`` returns the very same list. ``LOSSLESS`` normalises text without changing meaning. ``AUTO``
    adds query-aware selection in the last user message (with ``embed``, or with the ``lexical`` scorer,
    which needs none) and trimming of old
    history to the context window (only when the window is known). Output is deterministic, and nothing
    at or before the last ``cache_control`` marker changes.
    """
    check_messages(messages)
    try:
        level = Level(level)
    except ValueError as exc:
        raise CompressionError(f"unknown compression level {level!r}") from exc
    original = count_tokens(messages, model)
    if level is Level.OFF:
        return messages, CompressionReport(Level.OFF, original, original)
    result = normalize_messages(messages)
    passages = dropped = 0
    if level is Level.AUTO:
        result, passages, dropped = await _auto(
            result, protected=protected_prefix(messages), model=model, embed=embed, options=options
        )
    report = CompressionReport(level, original, count_tokens(result, model), passages, dropped)
    return result, report
