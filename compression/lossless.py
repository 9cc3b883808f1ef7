"""The lossless pass over a chat message list, and the rules about what may be touched at all.

Untouchable: every message at or before the last Anthropic ``cache_control`` marker (on a message or on
one of its content parts), tool call arguments, non-text content parts (images, thinking blocks) and
every key other than ``content``. Text content of any role is normalised, including ``tool`` output,
whose JSON is minified (the parsed value stays equal). Each message is normalised on its own, so a
conversation prefix sent again next turn comes out byte-identical.
"""

from __future__ import annotations

import copy
from typing import Any

from compression.errors import InvalidMessagesError
from compression.text import normalize_text


def check_messages(messages: Any) -> None:
    """Raise InvalidMessagesError unless ``messages`` is a list of dicts."""
    if not isinstance(messages, list):
        raise InvalidMessagesError(f"messages must be a list, got {type(messages).__name__}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidMessagesError(f"message {index} must be an object, got {type(message).__name__}")


def _has_marker(message: dict[str, Any]) -> bool:
    if "cache_control" in message:
        return True
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content)


def protected_prefix(messages: list[dict[str, Any]]) -> int:
    """How many leading messages must stay byte-identical: up to and including the last cache marker."""
    for index in range(len(messages) - 1, -1, -1):
        if _has_marker(messages[index]):
            return index + 1
    return 0


def is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``message`` with its text content normalised losslessly, everything else copied."""
    result = copy.deepcopy(message)
    content = message.get("content")
    if isinstance(content, str):
        result["content"] = normalize_text(content)
    elif isinstance(content, list):
        seen: set[str] = set()
        for part in result["content"]:
            if is_text_part(part) and part["text"].strip():
                part["text"] = normalize_text(part["text"], seen)
    return result


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lossless pass: a new list of new dicts; the protected prefix is copied unchanged."""
    check_messages(messages)
    keep = protected_prefix(messages)
    return [copy.deepcopy(m) if i < keep else normalize_message(m) for i, m in enumerate(messages)]
