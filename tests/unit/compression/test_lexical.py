"""The lexical (BM25) scorer and ``auto`` selection with it: no embedder needed."""

from __future__ import annotations

import numpy as np
import pytest

from compression import CompressionError, CompressionOptions, Level, compress
from compression.lexical import bm25_scores, words

from .test_auto import ANSWER, HEAD, MODEL, QUESTION, doc_message, documents

LEXICAL = CompressionOptions(auto_scorer="lexical")


def test_words_drop_function_words_and_punctuation() -> None:
    assert words("What is the capital of Zorblat, in 2024?") == ["capital", "zorblat", "2024"]


def test_rare_question_words_outrank_common_ones() -> None:
    passages = [
        "The river flows past the old mill and the river bank.",
        "Zorblat is a river town; the river is wide.",
        "The river is long. The river is cold. The river is deep.",
    ]
    scores = bm25_scores("Which river town is Zorblat?", passages)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert int(np.argmax(scores)) == 1  # "zorblat" is in one passage only: it outweighs repeated "river"


def test_no_overlap_or_no_terms_scores_zero() -> None:
    assert bm25_scores("the of and?", ["some text", "more text"]).tolist() == [0.0, 0.0]
    assert bm25_scores("zorblat", ["some text", "more text"]).tolist() == [0.0, 0.0]
    assert bm25_scores("zorblat", []).shape == (0,)


async def test_lexical_selection_keeps_the_answer_without_an_embedder() -> None:
    out, report = await compress([doc_message()], level=Level.AUTO, model=MODEL, embed=None, options=LEXICAL)
    text = out[0]["content"]
    assert report.passages_dropped > 0 and report.tokens_sent < report.tokens_original
    assert text.startswith(HEAD) and text.endswith(QUESTION) and ANSWER in text
    kept = [d for d in documents() if d in text]
    assert kept == sorted(kept, key=documents().index)  # original order, copied exactly


async def test_lexical_selection_is_deterministic() -> None:
    first = await compress([doc_message()], level=Level.AUTO, model=MODEL, options=LEXICAL)
    second = await compress([doc_message()], level=Level.AUTO, model=MODEL, options=LEXICAL)
    assert first == second


def test_unknown_scorer_is_rejected() -> None:
    with pytest.raises(CompressionError, match="auto_scorer"):
        CompressionOptions(auto_scorer="vibes")  # type: ignore[arg-type]
