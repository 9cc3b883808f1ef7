"""Features of a (query, candidate) pair for the cache's hit verifier.

Lexical facts of each string (words, stems, numbers, names, negation, question type), IDF-weighted counts of
the content words one side has and the other lacks, and a soft alignment of those words through small
single-word vectors (MiniLM on the word alone, shipped in ``cache/data``). Only the two strings and the cosine
the index already computed are needed; a verification costs well under a millisecond. ``pair_features``
returns the vector the trees use; the hard rules read the same ``PairFacts``.

Bounded work: every feature is linear in the two texts except the in-order match (``sequence_ratio``, over at
most ``MAX_SEQUENCE_STEMS`` stems per side) and the soft alignment (at most ``MAX_ALIGN_WORDS`` words per side),
whose costs are therefore capped by constants. Both caps are far above any question the verifier was
calibrated on (QQP's longest has 70 stems), so its verdicts there are unchanged; the verifier itself refuses
texts over ``cache.verify.MAX_VERIFY_CHARS``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*%?")
_SENTENCE_START = re.compile(r"(?:^|[.?!:;]\s+|\(\s*|\"\s*)([A-Za-z]+)")

STOPWORDS: frozenset[str] = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself
    now of off on once only or other our ours ourselves out over own same she should so some such than that
    the their theirs them themselves then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you your yours yourself yourselves
    i'm i've it's what's how's there's that's who's you're we're they're don't does doesn't can't best good
    get way ways someone thing things much many also really one make use used using
    """.split()
)
NEGATIONS: frozenset[str] = frozenset(
    """not no never without nobody nothing none nor cannot can't don't doesn't didn't isn't aren't wasn't
    weren't won't wouldn't shouldn't couldn't haven't hasn't hadn't ain't""".split()
)
QUESTION_WORDS: frozenset[str] = frozenset("what how why when where who which whom whose".split())
_NUMBER_WORDS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()
    )
    if i != 1  # "one" is mostly a pronoun ("which one"), not a count
}
_ANTONYMS: tuple[tuple[str, str], ...] = (
    ("man", "woman"), ("men", "women"), ("male", "female"), ("boy", "girl"), ("husband", "wife"),
    ("boyfriend", "girlfriend"), ("before", "after"), ("buy", "sell"), ("best", "worst"), ("pro", "con"),
    ("advantage", "disadvantage"), ("good", "bad"), ("increase", "decrease"), ("high", "low"),
    ("win", "lose"), ("start", "end"), ("first", "last"), ("big", "small"), ("rich", "poor"),
    ("old", "new"), ("young", "old"), ("positive", "negative"), ("hot", "cold"), ("day", "night"),
    ("north", "south"), ("east", "west"), ("left", "right"), ("android", "ios"), ("iphone", "android"),
)
ANTONYMS: dict[str, frozenset[str]] = {}
for _x, _y in _ANTONYMS:
    ANTONYMS[_x] = ANTONYMS.get(_x, frozenset()) | {_y}
    ANTONYMS[_y] = ANTONYMS.get(_y, frozenset()) | {_x}
_SUFFIXES: tuple[str, ...] = ("ing", "ies", "es", "ed", "ly", "s")
_QTYPE_OF: dict[str, str] = {
    **{w: w for w in ("what", "how", "why", "which", "who", "when", "where", "will")},
    **{w: "is" for w in ("is", "are", "was", "were", "am")},
    **{w: "do" for w in ("do", "does", "did")},
    **{w: "can" for w in ("can", "could")},
    **{w: "should" for w in ("should", "would")},
    "what's": "what", "whats": "what", "whom": "who", "whose": "who", "how's": "how",
}
QUESTION_TYPES: tuple[str, ...] = tuple(sorted(set(_QTYPE_OF.values()))) + ("other",)
#: words whose presence on one side only flips a comparison or asks a different thing
_COMPARATIVES: frozenset[str] = frozenset(
    """best worst better worse most least more less top vs versus difference differences compare comparison
    before after first last highest lowest biggest smallest largest cheapest easiest hardest fastest""".split()
)

def stem(word: str) -> str:
    """A crude suffix stripper: enough to match 'countries'/'country', 'learning'/'learn'."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


@dataclass(frozen=True)
class TextFacts:
    words: tuple[str, ...]  # lower-cased tokens in order
    word_set: frozenset[str]
    content: frozenset[str]  # stemmed non-stopwords, no numbers
    numbers: frozenset[str]
    names: frozenset[str]  # lower-cased capitalised / all-caps words not at a sentence start
    negated: bool
    question_words: frozenset[str]
    stems: tuple[str, ...] = ()  # stemmed words in order (stopwords included), for bigrams and sequence match
    qtype: str = "other"  # question type from the first word: what, how, why, ... (see QUESTION_TYPES)
    content_words: frozenset[str] = frozenset()  # the lower-cased words behind ``content`` (unstemmed)


def question_type(words: tuple[str, ...]) -> str:
    """The question type of a tokenised question: its first question word among the first three words."""
    for word in words[:3]:
        if word in _QTYPE_OF:
            return _QTYPE_OF[word]
    return "other"


def text_facts(text: str) -> TextFacts:
    tokens = _WORD.findall(text)
    words = tuple(t.lower() for t in tokens)
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    names: set[str] = set()
    numbers: set[str] = set()
    for match in _WORD.finditer(text):
        token = match.group(0)
        lower = token.lower()
        if token[0].isdigit():
            numbers.add(token.replace(",", "").rstrip("%"))
        elif lower in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[lower])
        elif token[0].isupper() and match.start() not in starts and lower not in STOPWORDS and token != "I":
            names.add(lower)
        elif len(token) > 1 and token.isupper() and lower not in STOPWORDS:
            names.add(lower)
    content = frozenset(stem(w) for w in words if w not in STOPWORDS and not w[0].isdigit())
    return TextFacts(
        words=words,
        word_set=frozenset(words),
        content=content,
        numbers=frozenset(numbers),
        names=frozenset(names),
        negated=any(w in NEGATIONS or w.endswith("n't") for w in words),
        question_words=frozenset(w for w in words if w in QUESTION_WORDS),
        stems=tuple(stem(w) for w in words),
        qtype=question_type(words),
        content_words=frozenset(w for w in words if w not in STOPWORDS and not w[0].isdigit()),
    )


@dataclass(frozen=True)
class PairFacts:
    numbers_differ: bool  # both mention numbers and the sets differ
    number_one_side: bool  # only one of them mentions a number
    numbers_swapped: bool  # each side has a number the other lacks ("2017" vs "2018"), not just an extra one
    names_a_only: frozenset[str]  # names in a that b does not mention at all
    names_b_only: frozenset[str]
    negation_mismatch: bool
    content_a_only: frozenset[str]
    content_b_only: frozenset[str]


def pair_facts(a: TextFacts, b: TextFacts) -> PairFacts:
    b_mentions = b.word_set | b.content
    a_mentions = a.word_set | a.content
    return PairFacts(
        numbers_differ=bool(a.numbers and b.numbers and a.numbers != b.numbers),
        number_one_side=bool(a.numbers) != bool(b.numbers),
        numbers_swapped=bool((a.numbers - b.numbers) and (b.numbers - a.numbers)),
        names_a_only=frozenset(n for n in a.names if n not in b_mentions and stem(n) not in b_mentions),
        names_b_only=frozenset(n for n in b.names if n not in a_mentions and stem(n) not in a_mentions),
        negation_mismatch=a.negated != b.negated,
        content_a_only=a.content - b.content,
        content_b_only=b.content - a.content,
    )




FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "word_jaccard",
    "content_jaccard",
    "idf_jaccard",
    "bigram_jaccard",
    "sequence_ratio",
    "length_ratio",
    "length_min",
    "length_max",
    "content_diff_min",
    "content_diff_max",
    "idf_diff_min",
    "idf_diff_max",
    "idf_unmatched_max",
    "idf_unmatched_max_min",
    "idf_shared",
    "near_match_share",
    "numbers_differ",
    "number_one_side",
    "numbers_swapped",
    "names_differ_both",
    "names_diff_count",
    "negation_mismatch",
    "qtype_mismatch",
    "wh_mismatch",
    "first_word_same",
    "antonym_swap",
    "comparative_one_side",
    "align_worst",
    "align_mass_min",
    "align_mass_max",
    "align_missing_min",
    "align_missing_max",
)
ALIGN_OK = 0.75  # a word whose best match on the other side is below this cosine counts as missing there
MAX_SEQUENCE_STEMS = 128  # SequenceMatcher is quadratic (and worse): 1.5 ms at most on 128 stems per side
MAX_ALIGN_WORDS = 256  # the alignment is a (words x words) product: bounded to 256 x 256 vectors


@dataclass(frozen=True)
class WordVectors:
    """Unit-length vectors of single words (MiniLM on the word alone), for soft word alignment."""

    index: dict[str, int]
    vectors: np.ndarray  # (n, d) float32

    @classmethod
    def from_arrays(cls, words: Sequence[str], vectors: np.ndarray) -> WordVectors:
        """Vectors (any scale, e.g. int8) for ``words``, normalised to unit length."""
        matrix = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls({w: i for i, w in enumerate(words)}, matrix / np.maximum(norms, 1e-12))

    @classmethod
    def load(cls, path: str | Path) -> WordVectors:
        """Read an ``.npz`` with ``words`` (one string, newline-separated) and ``vectors`` (n, d)."""
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(str(data["words"]).split("\n"), data["vectors"])

    def save(self, path: str | Path) -> None:
        """Write int8 vectors (x127) and the word list, compressed."""
        words = sorted(self.index, key=self.index.__getitem__)
        quantised = np.round(self.vectors * 127).clip(-127, 127).astype(np.int8)
        np.savez_compressed(path, words=np.array("\n".join(words)), vectors=quantised)

    def best_matches(self, words: Collection[str], others: Collection[str]) -> list[float]:
        """For each of ``words``: its highest cosine with any of ``others`` (0.0 when either is unknown)."""
        rows = [self.index.get(w, -1) for w in words]
        cols = sorted(self.index[o] for o in others if o in self.index)
        if not cols:
            return [0.0] * len(rows)
        known = [r for r in rows if r >= 0]
        best = dict(zip(known, (self.vectors[known] @ self.vectors[cols].T).max(axis=1).tolist(), strict=True))
        return [best[r] if r >= 0 else 0.0 for r in rows]


def _jaccard(x: Collection[Hashable], y: Collection[Hashable]) -> float:
    union = len(set(x) | set(y))
    return len(set(x) & set(y)) / union if union else 1.0


def _prefixes(words: Collection[str]) -> frozenset[str]:
    return frozenset(w[:5] for w in words if len(w) >= 5)


def _near_count(words: Collection[str], others: Collection[str]) -> int:
    """How many of ``words`` loosely match one of ``others`` where the stemmer misses: a shared 5-letter prefix
    ('organise'/'organization'). Linear: one set of the others' prefixes."""
    prefixes = _prefixes(others)
    return sum(len(w) >= 5 and w[:5] in prefixes for w in words)


def sequence_ratio(a: Sequence[str], b: Sequence[str]) -> float:
    """difflib's ratio of the in-order match of two stem sequences, on their first ``MAX_SEQUENCE_STEMS``
    stems each: exact for any question, a bounded cost for anything longer."""
    head_a, head_b = a[:MAX_SEQUENCE_STEMS], b[:MAX_SEQUENCE_STEMS]
    return difflib.SequenceMatcher(None, head_a, head_b, autojunk=False).ratio()


def _idf_stats(only: frozenset[str], idf: Mapping[str, float], default: float) -> tuple[float, float]:
    weights = [idf.get(w, default) for w in sorted(only)]  # sorted: float sums independent of hash order
    return sum(weights), max(weights, default=0.0)


def _alignment(
    a: TextFacts, b: TextFacts, vectors: WordVectors | None, idf: Mapping[str, float], default_idf: float
) -> list[float]:
    """Soft alignment of the words each side has and the other lacks (by stem): the worst best-match cosine,
    the IDF-weighted mass of (1 - best match) per side, and the count per side matched below ``ALIGN_OK``."""
    worst, mass, missing = 1.0, [0.0, 0.0], [0.0, 0.0]
    for side, (x, y) in enumerate(((a, b), (b, a))):
        unmatched = [w for w in sorted(x.content_words) if stem(w) not in y.content][:MAX_ALIGN_WORDS]
        if not unmatched:
            continue
        others = sorted(y.content_words)[:MAX_ALIGN_WORDS]
        best = vectors.best_matches(unmatched, others) if vectors else [0.0] * len(unmatched)
        worst = min(worst, *best)
        mass[side] = sum(idf.get(stem(w), default_idf) * (1.0 - s) for w, s in zip(unmatched, best, strict=True))
        missing[side] = float(sum(s < ALIGN_OK for s in best))
    return [worst, min(mass), max(mass), min(missing), max(missing)]


def pair_features(
    a: TextFacts, b: TextFacts, facts: PairFacts, cosine: float, idf: Mapping[str, float], default_idf: float,
    vectors: WordVectors | None = None,
) -> list[float]:
    """The feature vector, in ``FEATURE_NAMES`` order. ``idf``: stemmed word -> inverse document frequency
    (``default_idf`` for a word not in it); every feature is symmetric in ``a`` and ``b``."""
    only_a, only_b = facts.content_a_only, facts.content_b_only
    sum_a, max_a = _idf_stats(only_a, idf, default_idf)
    sum_b, max_b = _idf_stats(only_b, idf, default_idf)
    shared = sum(idf.get(w, default_idf) for w in sorted(a.content & b.content))
    len_a, len_b = max(1, len(a.words)), max(1, len(b.words))
    near = _near_count(only_a, only_b) + _near_count(only_b, only_a)
    bigrams_a = set(zip(a.stems, a.stems[1:], strict=False))
    bigrams_b = set(zip(b.stems, b.stems[1:], strict=False))
    one_side = (a.word_set ^ b.word_set) & _COMPARATIVES
    wh = {"what", "how", "why", "which", "who", "when", "where"}
    return [
        cosine,
        _jaccard(a.word_set, b.word_set),
        _jaccard(a.content, b.content),
        shared / (shared + sum_a + sum_b) if shared + sum_a + sum_b > 0 else 1.0,
        _jaccard(bigrams_a, bigrams_b),
        sequence_ratio(a.stems, b.stems),
        min(len_a, len_b) / max(len_a, len_b),
        float(min(len_a, len_b)),
        float(max(len_a, len_b)),
        float(min(len(only_a), len(only_b))),
        float(max(len(only_a), len(only_b))),
        min(sum_a, sum_b),
        max(sum_a, sum_b),
        max(max_a, max_b),
        min(max_a, max_b),
        shared,
        near / (len(only_a) + len(only_b)) if only_a or only_b else 0.0,
        float(facts.numbers_differ),
        float(facts.number_one_side),
        float(facts.numbers_swapped),
        float(bool(facts.names_a_only) and bool(facts.names_b_only)),
        float(len(facts.names_a_only) + len(facts.names_b_only)),
        float(facts.negation_mismatch),
        float(a.qtype != b.qtype),
        float(a.qtype != b.qtype and a.qtype in wh and b.qtype in wh),
        float(bool(a.words and b.words and a.words[0] == b.words[0])),
        float(any(ANTONYMS.get(w, frozenset()) & b.word_set for w in a.word_set - b.word_set)),
        float(len(one_side)),
        *_alignment(a, b, vectors, idf, default_idf),
    ]
