"""Cutting a message's text into passages for query-aware selection.

A unit is a paragraph: lines up to a blank line, where blank lines inside a fenced code block do not
count (so code is never cut). The first unit of the message (usually the instruction) and its last
(usually the question) are kept apart as edges. Between them, units longer than ``MAX_TOKENS`` are cut
at line and then sentence ends, and units shorter than ``MIN_TOKENS`` (a title line, a caption) are
merged into the next one. Passages are spans of the original text, so kept text is copied exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from compression.text import FENCE_OPEN

MAX_TOKENS = 256
MIN_TOKENS = 24
EDGE_MAX_TOKENS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class Passage:
    part: int
    """Index of the text (content string or text part) the passage comes from."""
    start: int
    end: int
    tokens: int
    atomic: bool = False
    """Holds a fenced block: never cut."""


def paragraph_spans(text: str) -> list[tuple[int, int, bool]]:
    """(start, end, has_fence) of each paragraph, without surrounding blank lines."""
    spans: list[tuple[int, int, bool]] = []
    start: int | None = None
    end = 0
    fence: str | None = None
    has_fence = False
    pos = 0
    for line in text.split("\n"):
        stripped = line.rstrip()
        line_end = pos + len(line)
        if fence is not None:
            body = stripped.lstrip(" ")
            if body and set(body) == {fence[0]} and len(body) >= len(fence):
                fence = None
            end = line_end
        elif not stripped:
            if start is not None:
                spans.append((start, end, has_fence))
            start, has_fence = None, False
        else:
            opened = FENCE_OPEN.match(stripped)
            if opened is not None:
                fence, has_fence = opened.group(1), True
            start = pos if start is None else start
            end = line_end
        pos = line_end + 1
    if start is not None:
        spans.append((start, end, has_fence))
    return spans


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Line spans of text[start:end], each line further cut at sentence ends."""
    pieces: list[tuple[int, int]] = []
    line_start = start
    while line_start < end:
        newline = text.find("\n", line_start, end)
        line_end = end if newline < 0 else newline
        cut = line_start
        for match in _SENTENCE_END.finditer(text, line_start, line_end):
            pieces.append((cut, match.start()))
            cut = match.end()
        if cut < line_end:
            pieces.append((cut, line_end))
        line_start = line_end + 1
    return pieces


def _split_long(part: int, text: str, unit: Passage, count: Callable[[str], int]) -> list[Passage]:
    if unit.atomic or unit.tokens <= MAX_TOKENS:
        return [unit]
    out: list[Passage] = []
    cur_start, cur_end, cur_tokens = -1, -1, 0
    for piece_start, piece_end in _pieces(text, unit.start, unit.end):
        tokens = count(text[piece_start:piece_end])
        if cur_start >= 0 and cur_tokens + tokens > MAX_TOKENS:
            out.append(Passage(part, cur_start, cur_end, cur_tokens))
            cur_start, cur_tokens = -1, 0
        cur_start = piece_start if cur_start < 0 else cur_start
        cur_end, cur_tokens = piece_end, cur_tokens + tokens
    if cur_start >= 0:
        out.append(Passage(part, cur_start, cur_end, cur_tokens))
    return out


def _merge_short(units: list[Passage]) -> list[Passage]:
    """Merge each short unit into the next unit of the same text."""
    out: list[Passage] = []
    pending: Passage | None = None
    for unit in units:
        if pending is not None and pending.part == unit.part:
            unit = Passage(unit.part, pending.start, unit.end, pending.tokens + unit.tokens,
                           pending.atomic or unit.atomic)
        elif pending is not None:
            out.append(pending)
        pending = None
        if unit.tokens < MIN_TOKENS:
            pending = unit
        else:
            out.append(unit)
    if pending is not None:
        out.append(pending)
    return out


@dataclass(frozen=True)
class Layout:
    """A message's texts cut into head (first unit), middle passages and tail (last unit)."""

    head: Passage | None
    middle: list[Passage]
    tail: Passage | None


def layout(texts: list[str], count: Callable[[str], int]) -> Layout:
    """Cut the message's texts (in content order) into edges and middle passages.

    An edge longer than ``EDGE_MAX_TOKENS`` is a document, not an instruction or a question: it joins the
    middle.
    """
    units = [
        Passage(part, start, end, count(text[start:end]), fence)
        for part, text in enumerate(texts)
        for start, end, fence in paragraph_spans(text)
    ]
    if len(units) < 3:
        return Layout(None, units, None)
    head = units[0] if units[0].tokens <= EDGE_MAX_TOKENS else None
    tail = units[-1] if units[-1].tokens <= EDGE_MAX_TOKENS else None
    inner = units[head is not None : len(units) - (tail is not None)]
    middle = [p for unit in inner for p in _split_long(unit.part, texts[unit.part], unit, count)]
    return Layout(head, _merge_short(middle), tail)
