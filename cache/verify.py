"""The semantic cache's hit verifier: is a cached question really the same question as the query?

A nearest neighbour by cosine is only a *candidate*. ``Verifier.check`` serves it only if

1. its cosine reaches the floor (the calibrated ``default_min_similarity``, or the request's own threshold);
2. no hard rule fires: numbers swapped ("GATE 2017" / "GATE 2018"), names swapped ("Crawford County" /
   "Jefferson County"), negation on one side only (each rule switched on or off by calibration);
3. gradient-boosted trees over pair features (``cache.features``: cosine, IDF-weighted unmatched words, soft
   word alignment, question type, numbers, names, ...) give a probability of "same question" at or above the
   calibrated cutoff.

4. both texts are at most ``MAX_VERIFY_CHARS`` characters: a longer one is refused ("too-long") before any
   work, so a verification costs a bounded time whatever a client sends (the features are linear in the
   texts, their quadratic parts capped; see ``cache.features``). A refused candidate is a miss, never a
   wrong hit: a long prompt still gets exact hits.

The trees, IDFs, floor and cutoff are fitted by ``benchmarks/calibrate_cache.py`` on splits of QQP that are
never reported on, and shipped as ``cache/data/verifier.json`` (+ ``cache/data/word_vectors.npz``).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.features import (
    FEATURE_NAMES,
    PairFacts,
    TextFacts,
    WordVectors,
    pair_facts,
    pair_features,
    text_facts,
)

DEFAULT_PARAMS_PATH = Path(__file__).resolve().parent / "data" / "verifier.json"
RULES: tuple[str, ...] = ("number-mismatch", "name-mismatch", "negation-mismatch")
#: longest query or cached question the verifier reads (about 1,500 words; QQP's longest question: 334)
MAX_VERIFY_CHARS = 8192
#: A cosine of unit float32 vectors may exceed 1 by rounding; ``best_case`` looks this far above 1.
COSINE_SLACK = 1e-4
#: Where the transformer's cosine sits in the feature vector (the only feature that depends on it).
COSINE = FEATURE_NAMES.index("cosine")


_WORDS = re.compile(r"\w+(?:[.,:'’/-]\w+)*")


def same_question(a: str, b: str) -> bool:
    """The same words in the same order, ignoring case, spacing and the punctuation around words (not inside
    them: ``3.5`` and ``35`` differ, ``don't`` and ``dont`` differ). Linear in the texts' length."""
    words_a = _WORDS.findall(a.lower())
    return bool(words_a) and words_a == _WORDS.findall(b.lower())


class VerifierError(Exception):
    """Base class of verifier errors."""


class VerifierParamsError(VerifierError):
    """The parameter file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Verdict:
    accept: bool
    score: float  # classifier probability that the two are the same question (0.0 when a rule fired)
    reason: str  # "ok", "identical", "below-floor", "too-long", "classifier", or the hard rule that fired


@dataclass(frozen=True)
class TreeModel:
    """Gradient-boosted trees of one fixed depth, complete binary trees stored level by level.

    Tree ``t`` sends a row right at internal node ``i`` when ``x[features[t][i]] > thresholds[t][i]``
    (children of ``i``: ``2i+1`` left, ``2i+2`` right); the leaf reached adds ``leaves[t][leaf]`` to ``base``.
    The sum is a log-odds; ``probability`` squashes it.
    """

    base: float
    depth: int
    features: tuple[tuple[int, ...], ...]
    thresholds: tuple[tuple[float, ...], ...]
    leaves: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        internal, n = 2**self.depth - 1, len(FEATURE_NAMES)
        if not self.depth >= 1 or not len(self.features) == len(self.thresholds) == len(self.leaves):
            raise VerifierParamsError("trees: depth must be >= 1 and features/thresholds/leaves one per tree")
        for f, t, v in zip(self.features, self.thresholds, self.leaves, strict=True):
            if len(f) != internal or len(t) != internal or len(v) != internal + 1:
                raise VerifierParamsError(f"every tree of depth {self.depth} has {internal} splits")
            if any(not 0 <= j < n for j in f):
                raise VerifierParamsError(f"tree splits on a feature outside 0..{n - 1}")

    def log_odds(self, x: list[float]) -> float:
        total, internal = self.base, 2**self.depth - 1
        for feats, thresholds, leaves in zip(self.features, self.thresholds, self.leaves, strict=True):
            i = 0
            while i < internal:
                i = 2 * i + (2 if x[feats[i]] > thresholds[i] else 1)
            total += leaves[i - internal]
        return total

    def probability(self, x: list[float]) -> float:
        return _squash(self.log_odds(x))

    def probabilities(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """``probability`` of several rows at once, all trees walked together in numpy (several times faster
        than ``log_odds`` per row for the shipped 750 trees)."""
        features, thresholds, leaves = self._arrays()
        x = np.asarray(rows, dtype=np.float64)
        trees = np.arange(features.shape[0])[None, :]
        picked = np.arange(x.shape[0])[:, None]
        node = np.zeros((x.shape[0], features.shape[0]), dtype=np.intp)
        for _ in range(self.depth):
            right = x[picked, features[trees, node]] > thresholds[trees, node]
            node = 2 * node + 1 + right
        totals = self.base + leaves[trees, node - features.shape[1]].sum(axis=1)
        return [_squash(float(z)) for z in totals]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached: tuple[np.ndarray, np.ndarray, np.ndarray] | None = self.__dict__.get("_compiled")
        if cached is None:
            cached = (np.asarray(self.features, dtype=np.intp), np.asarray(self.thresholds, dtype=np.float64),
                      np.asarray(self.leaves, dtype=np.float64))
            object.__setattr__(self, "_compiled", cached)  # frozen: a cache of derived arrays, not state
        return cached

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "depth": self.depth, "features": [list(f) for f in self.features],
                "thresholds": [list(t) for t in self.thresholds], "leaves": [list(v) for v in self.leaves]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeModel:
        return cls(
            base=float(data["base"]),
            depth=int(data["depth"]),
            features=tuple(tuple(int(j) for j in f) for f in data["features"]),
            thresholds=tuple(tuple(float(t) for t in ts) for ts in data["thresholds"]),
            leaves=tuple(tuple(float(v) for v in vs) for vs in data["leaves"]),
        )


def _squash(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0


def _idf_to_json(idf: dict[str, float]) -> dict[str, list[str]]:
    """IDF grouped by value rounded to 0.1, so each word is written once: {"4.2": ["word", ...]}."""
    groups: dict[str, list[str]] = {}
    for word, value in sorted(idf.items()):
        groups.setdefault(f"{value:.1f}", []).append(word)
    return groups


@dataclass(frozen=True)
class VerifierParams:
    min_similarity: float
    cutoff: float
    model: TreeModel
    idf: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    default_idf: float = 10.0
    word_vectors: str | None = None  # file of single-word vectors, relative to the parameter file
    rules: frozenset[str] = frozenset(RULES)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.feature_names != FEATURE_NAMES:
            raise VerifierParamsError(f"features {self.feature_names} are not this code's {FEATURE_NAMES}")
        if unknown := self.rules - set(RULES):
            raise VerifierParamsError(f"unknown rules {sorted(unknown)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "min_similarity": self.min_similarity,
            "cutoff": self.cutoff,
            "feature_names": list(self.feature_names),
            "rules": sorted(self.rules),
            "default_idf": self.default_idf,
            "word_vectors": self.word_vectors,
            "meta": self.meta,
            "model": self.model.to_json(),
            "idf": _idf_to_json(self.idf),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifierParams:
        try:
            return cls(
                min_similarity=float(data["min_similarity"]),
                cutoff=float(data["cutoff"]),
                model=TreeModel.from_json(data["model"]),
                idf={str(w): float(v) for v, words in data.get("idf", {}).items() for w in words},
                default_idf=float(data.get("default_idf", 10.0)),
                word_vectors=None if data.get("word_vectors") is None else str(data["word_vectors"]),
                rules=frozenset(str(r) for r in data.get("rules", RULES)),
                feature_names=tuple(str(n) for n in data.get("feature_names", FEATURE_NAMES)),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VerifierParamsError(f"bad verifier parameters: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> VerifierParams:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VerifierParamsError(f"cannot read verifier parameters {path}: {exc}") from exc
        return cls.from_json(data)


def fired_rule(facts: PairFacts, rules: frozenset[str]) -> str | None:
    """The first enabled hard rule that rejects the pair, or None."""
    if "number-mismatch" in rules and facts.numbers_swapped:
        return "number-mismatch"
    if "name-mismatch" in rules and facts.names_a_only and facts.names_b_only:
        return "name-mismatch"
    if "negation-mismatch" in rules and facts.negation_mismatch:
        return "negation-mismatch"
    return None


@dataclass(frozen=True)
class PairView:
    """What the verifier reads of a (query, cached question) pair before the transformer's cosine is known:
    everything but the cosine. ``features`` has the cosine's slot (``COSINE``) still to fill."""

    too_long: bool
    identical: bool
    rule: str | None
    features: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


def _early(view: PairView, similarity: float, floor: float) -> Verdict | None:
    """``decide``'s verdict when the trees need not run (in ``decide``'s order), else None."""
    if view.too_long:
        return Verdict(False, 0.0, "too-long")
    if view.identical:  # before the floor: a "?" alone moves MiniLM's cosine to ~0.95
        return Verdict(True, 1.0, "identical")
    if similarity < floor:
        return Verdict(False, 0.0, "below-floor")
    if view.rule is not None:
        return Verdict(False, 0.0, view.rule)
    return None


@dataclass(frozen=True)
class Outlook:
    """``decide`` of one viewed pair at every cosine from the floor to 1, worked out at once
    (:meth:`Verifier.outlook`). The trees split on the cosine at a few thresholds only, so the verdict is a step
    function of it: ``steps[j]`` holds for cosines above ``cuts[j - 1]`` (from the floor, for ``j = 0``) up to
    ``cuts[j]``. ``best`` is the most favourable verdict (``best_case``). Once the transformer's cosine is known,
    ``at`` reads the verdict off without running the trees again."""

    view: PairView
    floor: float
    best: Verdict
    cuts: tuple[float, ...] = ()
    steps: tuple[Verdict, ...] = ()

    def at(self, similarity: float) -> Verdict | None:
        """``decide(view, similarity, min_similarity=floor)``; None for a cosine the steps do not cover (above
        1 + ``COSINE_SLACK``, or NaN, which every split sends left): ask ``decide``."""
        early = _early(self.view, similarity, self.floor)
        if early is not None:
            return early
        if not self.steps or not similarity <= 1.0 + COSINE_SLACK:
            return None
        return self.steps[bisect.bisect_left(self.cuts, similarity)]


class Verifier:
    """Accepts or refuses a semantic-cache candidate. Pure and thread-safe; ``check`` costs well under 1 ms on
    questions, and a bounded time (tens of ms) on anything up to ``MAX_VERIFY_CHARS``.

    ``check`` is ``view`` (the lexical part: rules and pair features, no cosine) then ``decide`` (the cosine).
    ``best_case`` answers from a view alone whether *any* cosine at or above the floor could be accepted: the
    trees split on the cosine at a few thresholds only, so the probability is a step function of it and its
    maximum over [floor, 1] is found by evaluating one cosine per step. The cache asks it before running the
    transformer, and skips the transformer for a candidate the verifier would refuse whatever its cosine."""

    def __init__(self, params: VerifierParams, vectors: WordVectors | None = None) -> None:
        self.params = params
        self.vectors = vectors
        self.default_min_similarity: float = params.min_similarity
        self._cosine_cuts = sorted({t for feats, ts in zip(params.model.features, params.model.thresholds,
                                                            strict=True)
                                    for j, t in zip(feats, ts, strict=True) if j == COSINE})

    @classmethod
    def load(cls, path: str | Path) -> Verifier:
        """A parameter file and the word vectors it names (next to it)."""
        params = VerifierParams.load(path)
        if params.word_vectors is None:
            return cls(params)
        vectors_path = Path(path).resolve().parent / params.word_vectors
        try:
            return cls(params, WordVectors.load(vectors_path))
        except (OSError, ValueError, KeyError) as exc:
            raise VerifierParamsError(f"cannot read word vectors {vectors_path}: {exc}") from exc

    @classmethod
    def load_default(cls) -> Verifier:
        """The verifier calibrated on QQP and shipped in ``cache/data/verifier.json``."""
        return cls.load(DEFAULT_PARAMS_PATH)

    def probability(self, a: TextFacts, b: TextFacts, facts: PairFacts, similarity: float) -> float:
        p = self.params
        return p.model.probability(pair_features(a, b, facts, similarity, p.idf, p.default_idf, self.vectors))

    def view(self, query: str, candidate: str) -> PairView:
        """The lexical half of ``check``: length cap, identical wording, hard rules, the pair's facts."""
        if len(query) > MAX_VERIFY_CHARS or len(candidate) > MAX_VERIFY_CHARS:
            return PairView(too_long=True, identical=False, rule=None)
        if same_question(query, candidate):
            return PairView(too_long=False, identical=True, rule=None)
        a, b = text_facts(query), text_facts(candidate)
        facts = pair_facts(a, b)
        rule = fired_rule(facts, self.params.rules)
        if rule is not None:
            return PairView(False, False, rule)
        p = self.params
        features = pair_features(a, b, facts, 0.0, p.idf, p.default_idf, self.vectors)
        return PairView(False, False, None, tuple(features))

    def _scores(self, view: PairView, cosines: Sequence[float]) -> list[float]:
        assert view.features is not None
        rows = [list(view.features) for _ in cosines]
        for row, cosine in zip(rows, cosines, strict=True):
            row[COSINE] = cosine
        return self.params.model.probabilities(rows)

    def _verdict(self, score: float) -> Verdict:
        return Verdict(score >= self.params.cutoff, score, "ok" if score >= self.params.cutoff else "classifier")

    def decide(self, view: PairView, similarity: float, *, min_similarity: float | None = None) -> Verdict:
        """``check``'s verdict for a viewed pair at this cosine."""
        floor = self.default_min_similarity if min_similarity is None else min_similarity
        early = _early(view, similarity, floor)
        return early if early is not None else self._verdict(self._scores(view, [similarity])[0])

    def best_case(self, view: PairView, *, min_similarity: float | None = None) -> Verdict:
        """The most favourable ``decide`` over every cosine in [floor, 1]: ``accept`` False means no cosine
        could make the verifier accept this pair (its reason and best score say why)."""
        return self.outlook(view, min_similarity=min_similarity).best

    def outlook(self, view: PairView, *, min_similarity: float | None = None) -> Outlook:
        """``decide`` of this view at every cosine in [floor, 1] (see :class:`Outlook`), one tree walk per
        step of the trees' cosine splits."""
        floor = self.default_min_similarity if min_similarity is None else min_similarity
        if view.too_long or view.identical or view.rule is not None:
            return Outlook(view, floor, self.decide(view, floor, min_similarity=floor))
        top = 1.0 + COSINE_SLACK
        if floor > top:
            return Outlook(view, floor, Verdict(False, 0.0, "below-floor"))
        # one cosine per step (``x > t`` goes right): the floor, and just above every split in [floor, top)
        cuts = tuple(t for t in self._cosine_cuts if floor <= t < top)
        steps = tuple(self._verdict(score) for score in
                      self._scores(view, [floor] + [math.nextafter(t, math.inf) for t in cuts]))
        return Outlook(view, floor, max(steps, key=lambda verdict: verdict.score), cuts, steps)

    def check(
        self, query: str, candidate: str, similarity: float, *, min_similarity: float | None = None
    ) -> Verdict:
        floor = self.default_min_similarity if min_similarity is None else min_similarity
        short = len(query) <= MAX_VERIFY_CHARS and len(candidate) <= MAX_VERIFY_CHARS
        if short and similarity < floor and not same_question(query, candidate):
            return Verdict(False, 0.0, "below-floor")  # without reading the pair's facts
        return self.decide(self.view(query, candidate), similarity, min_similarity=floor)
