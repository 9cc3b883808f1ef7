"""Could a hit be decided without the transformer? The verifier fitted on the gate's static cosine instead.

    .venv/bin/python -m benchmarks.static_verifier [--quick] [--data ../shared/data/qqp-dev.jsonl] [--targets 0.90,0.95]

Both verifiers are fitted the way ``benchmarks.calibrate_cache`` fits the shipped one (boosted trees over the same
features, word vectors included; out-of-fold lookups over the ``fit`` + ``calibrate`` splits, each held fold a
cache of ~3,000 entries), the only difference being where the cosine feature and the candidates come from: the
transformer (deja's default embedder) or the gate's static vectors (``cache.gate.StaticEmbedder``, ~0.1 ms a text).
For each target served-right share (Wilson lower bound at 80% confidence), the rules, floor and cutoff that serve
the most duplicates out of fold are chosen (without the shipped model's must-serve pairs), then applied to the
held-out ``test`` split as a cache. Reported per source and target: the out-of-fold and test outcomes (served,
right, share right, share of duplicates served). Takes ~12 minutes on 2 cores; not part of ``make bench``.
Writes ``benchmarks/results/static_verifier.json``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibrate_cache import (
    TOP_K,
    TRAIN_MIN_COSINE,
    accepted,
    candidate_table,
    fit_model,
    out_of_fold,
    search,
)
from benchmarks.qqp import Outcome, PoolSetup, load_split, pool_outcome, pool_setup, results_parser, static_vectors
from cache.features import WordVectors
from cache.verify import DEFAULT_PARAMS_PATH, Verifier, VerifierParams

FIT = {"bags": 5, "trees": 150, "depth": 3, "rate": 0.06}


def _summary(outcome: Outcome) -> dict[str, Any]:
    return {"served": outcome.served, "right": outcome.right, "served_right": round(outcome.precision, 4),
            "duplicates_served": round(outcome.hit_rate, 4)}


def apply(setup: PoolSetup, prob: np.ndarray, rules: np.ndarray, chosen: dict[str, Any]) -> Outcome:
    """Serve each query's first candidate that passes the chosen rules, floor and cutoff."""
    return pool_outcome(setup, accepted(setup, prob, rules, chosen["rules"], chosen["floor"], chosen["cutoff"]))


def compare(data: Path, source: str, targets: list[float], cache_dir: Path) -> dict[str, Any]:
    vectors = WordVectors.load(DEFAULT_PARAMS_PATH.parent / "word_vectors.npz")
    cache = cache_dir / f"static_verifier_{source}.npz"
    pairs = load_split("fit", data) + load_split("calibrate", data)
    with static_vectors() if source == "static" else contextlib.nullcontext():
        oof, prob, rules = out_of_fold(pairs, 5, cache, vectors, TRAIN_MIN_COSINE, 3000, **FIT)
        model, idf, default_idf, _, _ = fit_model(pairs, cache, vectors, TRAIN_MIN_COSINE, **FIT)
        test = pool_setup(load_split("test", data), cache, k=TOP_K)
    verifier = Verifier(VerifierParams(0.0, 0.5, model, idf, default_idf, None, frozenset()), vectors)
    test_prob, test_rules = candidate_table(test, verifier)
    out: dict[str, Any] = {}
    for target in targets:
        try:
            chosen = search(oof, prob, rules, target, 0.80)
        except SystemExit:
            out[f"{target:.2f}"] = None
            continue
        out[f"{target:.2f}"] = {"floor": chosen["floor"], "cutoff": chosen["cutoff"], "rules": chosen["rules"],
                                "out_of_fold": _summary(chosen["outcome"]),  # type: ignore[arg-type]
                                "test": _summary(apply(test, test_prob, test_rules, chosen))}
    return out


def main() -> None:
    parser = results_parser(__doc__ or "", "static_verifier", "the 0.90 target only")
    parser.add_argument("--targets", default="0.90,0.95")
    parser.add_argument("--cache-dir", type=Path, default=Path(".bench"), help="where embeddings are kept")
    args = parser.parse_args()
    targets = [0.90] if args.quick else [float(t) for t in args.targets.split(",")]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "static_verifier", "fit": FIT, "confidence": 0.80,
              "sources": {source: compare(args.data, source, targets, args.cache_dir)
                          for source in ("transformer", "static")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    json.dump(result, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
