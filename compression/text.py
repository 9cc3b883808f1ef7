"""Lossless normalisation of one text: whitespace, JSON minification, duplicate blocks.

The text is cut into fenced code blocks (kept byte for byte, except ``json`` fences whose JSON parses,
which are minified) and prose between them. In prose: standalone JSON documents are minified, runs of
spaces inside a line collapse to one (leading indentation is kept: it may be YAML or unfenced Python),
trailing whitespace goes, and blank-line runs shrink to a single blank line. Then a block (paragraph or
fenced block) repeated exactly within the message is dropped. Every step depends on the text alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})([^`]*)$")
_JSON_TOKENS = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')
_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
_BLANK_RUNS = re.compile(r"\n{3,}")
_JSON_FENCE_LANGS = frozenset({"json"})
DEDUP_MIN_CHARS = 40
"""Blocks shorter than this are never dropped as duplicates (separators, "Thanks!", closing braces)."""

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Segment:
    """A run of whole lines, joined to its neighbours by a newline.

    ``code`` segments (fenced blocks with their fence lines, minified JSON) are atomic and kept as they are.
    """

    code: bool
    text: str


def split_segments(text: str) -> list[Segment]:
    """Cut a text into alternating prose and fenced-code segments; an unclosed fence runs to the end."""
    segments: list[Segment] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        stripped = line.rstrip()
        if fence is None:
            opened = FENCE_OPEN.match(stripped)
            if opened is None:
                current.append(line)
                continue
            if current:
                segments.append(Segment(False, "\n".join(current)))
            current, fence = [line], opened.group(1)
        else:
            current.append(line)
            body = stripped.lstrip(" ")
            closes = body and set(body) == {fence[0]} and len(body) >= len(fence)
            if closes and len(stripped) - len(body) <= 3:
                segments.append(Segment(True, "\n".join(current)))
                current, fence = [], None
    if current:
        segments.append(Segment(fence is not None, "\n".join(current)))
    return segments


def minify_json(text: str) -> str | None:
    """The JSON text without insignificant whitespace, if ``text`` is a JSON object or array; else None.

    Only whitespace between tokens is removed: strings, numbers and key order stay byte for byte, so the
    parsed value is equal (and float spellings like ``1e5`` survive).
    """
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(value, dict | list):
        return None
    return _JSON_TOKENS.sub(lambda m: m.group(1) or "", stripped)


def _json_pieces(prose: str) -> list[Segment]:
    """Split prose at JSON objects/arrays that start a line and end their (last) line.

    Those come back minified as atomic segments (``code=True``: later steps leave them alone); the
    rest stays prose. Segments are whole lines, joined by newlines.
    """
    pieces: list[Segment] = []
    pos = 0
    for start in (m.start() for m in re.finditer(r"^[{\[]", prose, re.MULTILINE)):
        if start < pos:
            continue
        try:
            value, end = _decoder.raw_decode(prose, start)
        except ValueError:
            continue
        line_end = prose.find("\n", end)
        rest = prose[end:] if line_end < 0 else prose[end:line_end]
        if rest.strip() or not isinstance(value, dict | list):
            continue
        if start > pos:
            pieces.append(Segment(False, prose[pos : start - 1]))
        pieces.append(Segment(True, _JSON_TOKENS.sub(lambda m: m.group(1) or "", prose[start:end])))
        pos = len(prose) + 1 if line_end < 0 else line_end + 1
    if pos <= len(prose):
        pieces.append(Segment(False, prose[pos:]))
    return pieces


_SAFE_SPLIT = re.compile(r"(?<=\S) (?=\S)")  # a single space between words: no run of spaces spans it
_CHUNK = 65_536


def _inner_spaces(body: str) -> str:
    """``_INNER_SPACES.sub`` on pieces of at most about ``_CHUNK`` characters, cut at single spaces between words
    (same result): one regex call holds the GIL for its whole run, 0.3 s on a 5 MB line, and the event loop waits
    for it even when the call is in a worker thread."""
    if len(body) <= _CHUNK:
        return _INNER_SPACES.sub(" ", body)
    pieces, start = [], 0
    while start < len(body):
        cut = _SAFE_SPLIT.search(body, start + _CHUNK) if start + _CHUNK < len(body) else None
        end = cut.start() if cut is not None else len(body)
        pieces.append(_INNER_SPACES.sub(" ", body[start:end]))
        start = end
    return "".join(pieces)


def _normalize_line(line: str) -> str:
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)]
    body = _inner_spaces(body.rstrip())
    return indent + body if body else ""


def _normalize_prose(prose: str) -> str:
    return _BLANK_RUNS.sub("\n\n", "\n".join(_normalize_line(line) for line in prose.split("\n")))


def _normalize_code(code: str) -> str:
    lines = code.split("\n")
    opened = FENCE_OPEN.match(lines[0].rstrip())
    lang = opened.group(2).strip().split(" ")[0].lower() if opened else ""
    closed = len(lines) >= 2 and FENCE_OPEN.match(lines[-1].rstrip()) is not None
    if lang in _JSON_FENCE_LANGS and closed:
        minified = minify_json("\n".join(lines[1:-1]))
        if minified is not None:
            return "\n".join([lines[0], minified, lines[-1]])
    return code


def _blocks(segment: Segment) -> list[str]:
    return [segment.text] if segment.code else segment.text.split("\n\n")


def _drop_duplicates(segments: list[Segment], seen: set[str]) -> list[Segment]:
    """Drop blocks already seen in this message (prose paragraphs and whole fenced blocks)."""
    kept: list[Segment] = []
    for segment in segments:
        blocks = []
        for block in _blocks(segment):
            key = block.strip("\n")
            if len(key.strip()) >= DEDUP_MIN_CHARS and key in seen:
                # keep the newlines around a dropped paragraph; blank-line runs are collapsed later
                at = block.index(key)
                blocks.append("" if segment.code else block[:at] + block[at + len(key) :])
                continue
            seen.add(key)
            blocks.append(block)
        if not (segment.code and blocks == [""]):
            kept.append(Segment(segment.code, "\n\n".join(blocks)))
    return kept


def _collapse_blank_lines(text: str, first: bool, last: bool) -> str:
    """At most one empty line in a row; none at the start of the text or at its end."""
    lines: list[str] = []
    for line in text.split("\n"):
        if line or not lines or lines[-1]:
            lines.append(line)
    if first:
        while len(lines) > 1 and not lines[0]:
            lines.pop(0)
    if last:
        while len(lines) > 1 and not lines[-1]:
            lines.pop()
    return "\n".join(lines)


def _join(segments: list[Segment]) -> str:
    """Join segments by lines, merging adjacent prose so blank-line runs can be re-collapsed."""
    merged: list[Segment] = []
    for segment in segments:
        if merged and not segment.code and not merged[-1].code:
            merged[-1] = Segment(False, merged[-1].text + "\n" + segment.text)
        else:
            merged.append(segment)
    last = len(merged) - 1
    return "\n".join(
        s.text if s.code else _collapse_blank_lines(s.text, i == 0, i == last) for i, s in enumerate(merged)
    )


def normalize_text(text: str, seen: set[str] | None = None) -> str:
    """The lossless form of ``text``. ``seen`` carries block keys across the text parts of one message."""
    whole = minify_json(text)
    if whole is not None:
        return whole
    segments: list[Segment] = []
    for segment in split_segments(text):
        if segment.code:
            segments.append(Segment(True, _normalize_code(segment.text)))
        else:
            segments.extend(
                piece if piece.code else Segment(False, _normalize_prose(piece.text))
                for piece in _json_pieces(segment.text)
            )
    segments = _drop_duplicates(segments, set() if seen is None else seen)
    result = _join(segments)
    return result if result.strip() else text
