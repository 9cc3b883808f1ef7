"""Trimming old chat history to the model's context window, in frozen blocks.

History is cut into blocks of ``history_block`` messages counted from the first message after the
system prompt (and after any cache-marked prefix), so block boundaries never move as the conversation
grows. The fewest leading blocks are dropped that make the prompt fit; the cut then moves forward to the
next user message so no tool result loses its call and the history restarts on a user turn. System and
developer messages are kept wherever they are, and the last user message and what follows it are never
dropped. Until the conversation outgrows another block, the trimmed prompt therefore starts with the
same bytes every turn, which is what providers' prefix caches need.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compression.tokens import model_info

SYSTEM_ROLES = frozenset({"system", "developer"})
_HEADROOM_FRACTION = 8
_HEADROOM_MAX = 4096


@dataclass(frozen=True)
class Trimmed:
    messages: list[dict[str, Any]]
    dropped: int


@functools.lru_cache(maxsize=256)
def model_context_window(model: str) -> int | None:
    """The model's input limit from LiteLLM's bundled model map, or None when unknown."""
    info = model_info(model)
    if info is None:
        return None
    limit = info.get("max_input_tokens") or info.get("max_tokens")
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def prompt_budget(window: int) -> int:
    """Tokens the prompt may use: the window minus headroom for the reply and counting error."""
    return window - min(_HEADROOM_MAX, window // _HEADROOM_FRACTION)


def _last_user(messages: list[dict[str, Any]]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


def _cuts(messages: list[dict[str, Any]], start: int, end: int, block: int) -> list[int]:
    """Candidate cut points in increasing order: block boundaries moved to the next user message."""
    cuts: list[int] = []
    for boundary in range(start + block, end + 1, block):
        cut = next(i for i in range(boundary, end + 1) if messages[i].get("role") == "user")
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    if not cuts or cuts[-1] < end:
        cuts.append(end)  # last resort, not stable across turns: drop everything before the current turn
    return cuts


def trim_history(
    messages: list[dict[str, Any]], *, protected: int, budget: int, block: int,
    cost: Callable[[dict[str, Any]], int], overhead: int,
) -> Trimmed:
    """Drop the fewest leading history blocks so that ``overhead`` + the messages' cost fits ``budget``."""
    costs = [cost(m) for m in messages]
    total = overhead + sum(costs)
    end = _last_user(messages)
    if total <= budget or end is None:
        return Trimmed(messages, 0)
    start = protected
    while start < end and messages[start].get("role") in SYSTEM_ROLES:
        start += 1
    if start >= end:
        return Trimmed(messages, 0)
    droppable = [i for i in range(start, end) if messages[i].get("role") not in SYSTEM_ROLES]
    cut = start
    for cut in _cuts(messages, start, end, block):
        if total - sum(costs[i] for i in droppable if i < cut) <= budget:
            break
    dropped = {i for i in droppable if i < cut}
    return Trimmed([m for i, m in enumerate(messages) if i not in dropped], len(dropped))
