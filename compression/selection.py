"""Query-aware passage selection (``auto``) for the last user message.

The message's first paragraph and its last are edges, always kept; one of them must read as a question
(a "?", a "Question:" label, or an opening interrogative word), else nothing is selected: without a
question there is nothing to rank by, and summarising or rewriting a whole document needs all of it.
The passages in between are ranked by cosine similarity of their embeddings to the question's (or, with
the ``lexical`` scorer, by BM25) and the best are kept, in their original order, until about 1/ratio of
their tokens is used. Scores are rounded before ranking so
last-bit noise from batched embedding cannot reorder near-ties; ties go to the earlier passage.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from compression.lexical import bm25_scores
from compression.lossless import is_text_part
from compression.passages import Layout, Passage, layout
from compression.values import CompressionOptions, EmbedFn

log = logging.getLogger(__name__)

_SCORE_DECIMALS = 4
_QUESTION = re.compile(
    r"\?|^\W*(question|query|q)\s*\d*\s*[:.)-]|^\W*(who|whom|whose|what|when|where|which|why|how|is|are|was|"
    r"were|do|does|did|can|could|should|would|will|has|have|name|list|find|explain|describe)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Selection:
    message: dict[str, Any]
    passages_dropped: int


def _texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if is_text_part(part)]
    return []


def _query(lay: Layout, texts: list[str]) -> str | None:
    for edge in (lay.tail, lay.head):
        if edge is not None:
            text = texts[edge.part][edge.start : edge.end]
            if _QUESTION.search(text):
                return text
    return None


def _rebuild(text: str, passages: list[Passage], kept: list[bool]) -> str:
    """The kept passages of one text in order; runs of neighbours are copied with what lies between them."""
    runs: list[tuple[int, int]] = []
    previous_kept = False
    for passage, keep in zip(passages, kept, strict=True):
        if keep and previous_kept:
            runs[-1] = (runs[-1][0], passage.end)
        elif keep:
            runs.append((passage.start, passage.end))
        previous_kept = keep
    return "\n\n".join(text[start:end] for start, end in runs)


def _rank(scores: np.ndarray, middle: list[Passage], budget: float) -> set[int]:
    order = sorted(range(len(middle)), key=lambda i: (-round(float(scores[i]), _SCORE_DECIMALS), i))
    kept: set[int] = set()
    used = 0
    for index in order:
        if not kept or used + middle[index].tokens <= budget:
            kept.add(index)
            used += middle[index].tokens
    return kept


async def _scores(embed: EmbedFn, query: str, passages: list[str]) -> np.ndarray | None:
    try:
        vectors = np.asarray(await embed([query, *passages]), dtype=np.float32)
    except Exception as exc:  # the embedder is someone else's: never fail the request over it
        log.warning("passage selection skipped: embedding failed: %r", exc)
        return None
    if vectors.ndim != 2 or vectors.shape[0] != len(passages) + 1:
        log.warning("passage selection skipped: embed returned shape %s", vectors.shape)
        return None
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return vectors[1:] @ vectors[0]


def _with_texts(message: dict[str, Any], texts: list[str | None]) -> dict[str, Any]:
    result = copy.deepcopy(message)
    if isinstance(message.get("content"), str):
        result["content"] = texts[0]
        return result
    parts, index = [], 0
    for part in result["content"]:
        if is_text_part(part):
            index += 1
            if texts[index - 1] is None:
                continue  # every passage of this part was dropped
            part["text"] = texts[index - 1]
        parts.append(part)
    result["content"] = parts
    return result


async def select_passages(
    message: dict[str, Any], embed: EmbedFn | None, options: CompressionOptions, count: Callable[[str], int]
) -> Selection | None:
    """The message with its least relevant passages dropped, or None when selection does not apply."""
    texts = _texts(message)
    lay = layout(texts, count)
    query = _query(lay, texts)
    doc_tokens = sum(p.tokens for p in lay.middle)
    if query is None or doc_tokens <= options.auto_min_tokens or len(lay.middle) < 2:
        return None
    passages = [texts[p.part][p.start : p.end] for p in lay.middle]
    if options.auto_scorer == "lexical":
        scores: np.ndarray | None = bm25_scores(query, passages)
    elif embed is not None:
        scores = await _scores(embed, query, passages)
    else:
        return None
    if scores is None:
        return None
    chosen = _rank(scores, lay.middle, doc_tokens / options.auto_ratio)
    ordered = [p for p in (lay.head, *lay.middle, lay.tail) if p is not None]
    keep = [p is lay.head or p is lay.tail for p in ordered]
    for index in chosen:
        keep[index + (lay.head is not None)] = True
    new_texts: list[str | None] = []
    for part, text in enumerate(texts):
        mine = [i for i, p in enumerate(ordered) if p.part == part]
        if not mine:
            new_texts.append(text)
            continue
        rebuilt = _rebuild(text, [ordered[i] for i in mine], [keep[i] for i in mine])
        new_texts.append(rebuilt or None)
    return Selection(_with_texts(message, new_texts), len(lay.middle) - len(chosen))
