"""Lexical relevance (BM25) of passages to a question: the fast scorer of ``auto`` passage selection.

Scores need no model: words are lower-cased letter/digit runs, English function words are ignored, and
the inverse document frequency comes from the message's own passages, so a word that appears in every
passage (the topic of the whole document) counts for little and a rare one (a name, a date) for much.
A 4,000-token prompt is scored in about a millisecond.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

K1 = 1.2
B = 0.75
_WORD = re.compile(r"[^\W_]+")
_STOP = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if in into is it its "
    "of on or should so than that the their them then there these they this to was were what when where which "
    "who whom whose why will with would you your question answer document documents".split()
)


def words(text: str) -> list[str]:
    """The words of ``text`` that BM25 counts."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def bm25_scores(query: str, passages: list[str]) -> np.ndarray:
    """BM25 of each passage for the words of ``query``, with IDF over ``passages``; float32, shape (n,)."""
    docs = [words(p) for p in passages]
    terms = sorted(set(words(query)))  # sorted: the float sum does not depend on set order
    n = len(docs)
    if n == 0 or not terms:
        return np.zeros(n, dtype=np.float32)
    mean_length = max(sum(len(d) for d in docs) / n, 1.0)
    df = Counter(w for d in docs for w in set(d))
    idf = {w: math.log(1.0 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in terms}
    out = np.zeros(n, dtype=np.float32)
    for i, doc in enumerate(docs):
        tf = Counter(doc)
        norm = K1 * (1.0 - B + B * len(doc) / mean_length)
        out[i] = sum(idf[w] * tf[w] * (K1 + 1.0) / (tf[w] + norm) for w in terms if tf[w])
    return out
