"""Verifier: hard rules, the shipped trees and word vectors, features, floors, and the parameter files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cache.features import (
    FEATURE_NAMES,
    WordVectors,
    pair_facts,
    pair_features,
    question_type,
    stem,
    text_facts,
)
from cache.verify import DEFAULT_PARAMS_PATH, TreeModel, Verdict, Verifier, VerifierParams, VerifierParamsError


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load_default()


def test_shipped_files_load_and_are_small(verifier: Verifier) -> None:
    assert DEFAULT_PARAMS_PATH.stat().st_size < 250_000
    assert verifier.params.word_vectors is not None
    assert (DEFAULT_PARAMS_PATH.parent / verifier.params.word_vectors).stat().st_size < 4_000_000
    assert verifier.vectors is not None and len(verifier.vectors.index) > 20_000
    assert 0.5 <= verifier.default_min_similarity < 1.0
    assert 0.0 < verifier.params.cutoff < 1.0
    assert {"number-mismatch", "name-mismatch"} <= verifier.params.rules
    assert verifier.params.meta["target_precision"] >= 0.9
    assert verifier.params.meta["calibration_pool"]["precision"] >= 0.9
    assert len(verifier.params.idf) > 1000 and verifier.params.default_idf > max(verifier.params.idf.values())


def test_params_round_trip_and_validation(verifier: Verifier) -> None:
    again = VerifierParams.from_json(verifier.params.to_json())
    assert again == verifier.params
    with pytest.raises(VerifierParamsError):
        VerifierParams.from_json({"cutoff": 0.5})
    assert again.idf == verifier.params.idf  # IDFs are written grouped by value, read back exactly
    with pytest.raises(VerifierParamsError):
        dataclasses.replace(verifier.params, feature_names=("cosine",))
    with pytest.raises(VerifierParamsError):
        dataclasses.replace(verifier.params, rules=frozenset({"no-such-rule"}))
    with pytest.raises(VerifierParamsError):
        VerifierParams.load("/nonexistent/verifier.json")


def test_missing_word_vectors_file_is_a_params_error(verifier: Verifier, tmp_path: Path) -> None:
    data = verifier.params.to_json()
    data["word_vectors"] = "absent.npz"
    (tmp_path / "verifier.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VerifierParamsError, match="word vectors"):
        Verifier.load(tmp_path / "verifier.json")
    data["word_vectors"] = None
    (tmp_path / "verifier.json").write_text(json.dumps(data), encoding="utf-8")
    assert Verifier.load(tmp_path / "verifier.json").vectors is None


def _stump(feature: int, threshold: float, left: float, right: float, base: float = 0.0) -> TreeModel:
    return TreeModel(base, 1, ((feature,),), ((threshold,),), ((left, right),))


def test_tree_model_routes_and_sums() -> None:
    x = [0.0] * len(FEATURE_NAMES)
    model = TreeModel(
        base=0.5,
        depth=2,
        features=((0, 1, 2), (3, 0, 0)),
        thresholds=((0.9, 0.5, 0.5), (1e9, 0.0, 0.0)),  # second tree: root never splits right
        leaves=((1.0, 2.0, 3.0, 4.0), (-0.25, -0.5, 7.0, 7.0)),
    )
    x[0], x[1], x[2] = 0.95, 0.0, 0.7
    # tree 1: 0.95 > 0.9 right, node 2 splits feature 2: 0.7 > 0.5 right -> leaf 3 (4.0)
    # tree 2: never right at the root, node 1 splits feature 0: 0.95 > 0.0 right -> leaf 1 (-0.5)
    assert model.log_odds(x) == pytest.approx(0.5 + 4.0 - 0.5)
    x[0] = 0.0  # tree 1: left, feature 1: 0.0 <= 0.5 left -> leaf 0; tree 2: left, 0.0 <= 0.0 left -> leaf 0
    assert model.log_odds(x) == pytest.approx(0.5 + 1.0 - 0.25)
    assert _stump(0, 0.5, -800.0, 800.0).probability(x) == 0.0
    assert _stump(0, -1.0, -800.0, 800.0).probability(x) == 1.0
    assert TreeModel.from_json(model.to_json()) == model


def test_tree_model_validation() -> None:
    with pytest.raises(VerifierParamsError):
        TreeModel(0.0, 2, ((0,),), ((0.5,),), ((0.0, 1.0),))  # depth 2 needs 3 splits and 4 leaves
    with pytest.raises(VerifierParamsError):
        _stump(len(FEATURE_NAMES), 0.5, 0.0, 1.0)
    with pytest.raises(VerifierParamsError):
        TreeModel.from_json({"base": 0.0, "depth": 1, "features": [[0]], "thresholds": [[0.5]], "leaves": []})


def test_gate_2017_vs_2018_rejected(verifier: Verifier) -> None:
    # a request threshold below their real cosine, so the rule (not the calibrated floor) decides
    verdict = verifier.check(
        "How do I prepare for GATE 2017 without coaching?", "How can I prepare for GATE 2018 without coaching?", 0.96,
        min_similarity=0.9,
    )
    assert verdict == Verdict(False, 0.0, "number-mismatch")


def test_crawford_vs_jefferson_county_rejected(verifier: Verifier) -> None:
    verdict = verifier.check(
        "What is a good inpatient drug and alcohol rehab center near Jefferson County IA?",
        "What is a good inpatient drug and alcohol rehab center near Crawford County IA?",
        0.967,
        min_similarity=0.9,
    )
    assert not verdict.accept and verdict.reason == "name-mismatch"


@pytest.mark.parametrize(
    ("query", "candidate", "cosine"),
    [  # label-1 pairs from qqp-dev, with their MiniLM cosine
        ("Can a state court overrule a decision made by the federal court?",
         "Can a state court overrule a decision by the federal court?", 0.997),
        ("Should India go through war with Pakistan?", "Should India go for war with Pakistan?", 0.986),
    ],
)
def test_paraphrase_duplicates_accepted(verifier: Verifier, query: str, candidate: str, cosine: float) -> None:
    verdict = verifier.check(query, candidate, cosine)
    assert verdict.accept and verdict.reason == "ok"
    assert verdict.score >= verifier.params.cutoff


@pytest.mark.parametrize(
    ("query", "candidate", "cosine"),
    [  # label-0 pairs from qqp-dev with cosine >= 0.95
        ("Is 650 KWD/month salary sufficient for living in Kuwait? What is the cost of living in Kuwait ?",
         "Is 300 KWD/month salary sufficient for living in Kuwait? What is the cost of living in Kuwait?", 0.962),
        ("Which is a good inpatient drug and alcohol rehab center near Wheeler County GA?",
         "Which is a good inpatient drug and alcohol rehab center near Baker County GA?", 0.973),
        ("Were there any major snubs with the 2016 Golden Globe Nominations?",
         "Were there any major snubs with the 2017 Golden Globe Nominations?", 0.969),
        ("When is the chart preparation time for train no. 19707?",
         "When is the chart preparation time for train no. 19708?", 0.991),
        ("Which is a suitable inpatient drug and alcohol rehab center in Clay County AL?",
         "Which is a suitable inpatient drug and alcohol rehab center in Mobile County AL?", 0.959),
    ],
)
def test_hard_negatives_rejected(verifier: Verifier, query: str, candidate: str, cosine: float) -> None:
    assert not verifier.check(query, candidate, cosine).accept


def test_floor_and_request_threshold(verifier: Verifier) -> None:
    dup = ("Should India go through war with Pakistan?", "Should India go for war with Pakistan?")
    below = verifier.default_min_similarity - 0.01
    assert verifier.check(*dup, below).reason == "below-floor"
    assert verifier.check(*dup, 0.986, min_similarity=0.999).reason == "below-floor"
    # a lower per-request threshold replaces the floor, but the rules still apply
    gate = ("GATE 2017 syllabus for EE?", "GATE 2018 syllabus for EE?")
    assert verifier.check(*gate, 0.9, min_similarity=0.5).reason == "number-mismatch"
    assert verifier.check(*dup, below, min_similarity=below).reason != "below-floor"


def test_identical_text_accepted(verifier: Verifier) -> None:
    assert verifier.check("What is  AI?", "what is ai?", 0.999) == Verdict(True, 1.0, "identical")


def test_features_numbers_names_negation() -> None:
    a = text_facts("Why can't I lose 5 kg in Delhi?")
    b = text_facts("Why do I lose 10 kg in Mumbai?")
    facts = pair_facts(a, b)
    assert a.numbers == {"5"} and a.negated and not b.negated
    assert facts.numbers_swapped and facts.negation_mismatch
    assert facts.names_a_only == {"delhi"} and facts.names_b_only == {"mumbai"}
    extra = pair_facts(text_facts("Best phone under 15000?"), text_facts("Best phone under 15,000 in 2016?"))
    assert extra.numbers_differ and not extra.numbers_swapped


def test_question_type() -> None:
    assert question_type(text_facts("What's the best way to learn Go?").words) == "what"
    assert question_type(text_facts("Is it safe to eat raw eggs?").words) == "is"
    assert question_type(text_facts("In India, why are trains late?").words) == "why"
    assert question_type(text_facts("Could someone explain monads?").words) == "can"
    assert question_type(text_facts("Tell me about the Moon.").words) == "other"


def _features(a: str, b: str, idf: dict[str, float], vectors: WordVectors | None = None) -> dict[str, float]:
    fa, fb = text_facts(a), text_facts(b)
    return dict(zip(FEATURE_NAMES, pair_features(fa, fb, pair_facts(fa, fb), 0.9, idf, 9.0, vectors), strict=True))


def test_idf_weighs_the_unmatched_words() -> None:
    idf = {stem(w): v for w, v in {"learn": 1.0, "python": 3.0, "quickly": 1.5, "kubernetes": 8.0}.items()}
    common = _features("How do I learn Python quickly?", "How do I learn Python?", idf)
    rare = _features("How do I learn Python on Kubernetes?", "How do I learn Python?", idf)
    assert common["idf_diff_max"] == 1.5 and rare["idf_diff_max"] == 8.0
    assert common["idf_diff_min"] == rare["idf_diff_min"] == 0.0
    assert rare["idf_unmatched_max"] == 8.0 and rare["idf_jaccard"] < common["idf_jaccard"]
    unknown = _features("How do I learn Python on Zanzibar?", "How do I learn Python?", idf)
    assert unknown["idf_unmatched_max"] == 9.0  # a word missing from the table counts as rarest


def test_features_are_symmetric() -> None:
    idf = {"learn": 1.0, "python": 3.0}
    pairs = [("Why can't I learn Python in 2 weeks?", "How do I learn Java in 3 weeks in Paris?"),
             ("Which is better, iPhone or Android?", "Is Android worse than the iPhone?")]
    for a, b in pairs:
        assert _features(a, b, idf) == pytest.approx(_features(b, a, idf))


def test_question_type_and_comparative_mismatch() -> None:
    f = _features("Why do I have social anxiety?", "Do I have social anxiety?", {})
    assert f["qtype_mismatch"] == 1.0 and f["wh_mismatch"] == 0.0
    f = _features("What is the best phone?", "Which is the worst phone?", {})
    assert f["wh_mismatch"] == 1.0 and f["comparative_one_side"] == 2.0 and f["antonym_swap"] == 1.0


def _toy_vectors() -> WordVectors:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16))
    words = ["buy", "purchase", "python", "java", "car"]
    rows = [base[0], base[0] + 0.1 * rng.normal(size=16), base[1], base[2], rng.normal(size=16)]
    return WordVectors.from_arrays(words, np.array(rows))


def test_soft_alignment_matches_synonyms_not_other_words() -> None:
    vectors = _toy_vectors()
    assert vectors.best_matches(["buy", "python", "unknown"], ["purchase", "car"])[0] > 0.9
    synonym = _features("Where can I buy a car?", "Where can I purchase a car?", {}, vectors)
    other = _features("Where can I learn Python?", "Where can I learn Java?", {}, vectors)
    exact_only = _features("Where can I buy a car?", "Where can I purchase a car?", {})
    assert synonym["align_worst"] > 0.9 and synonym["align_missing_max"] == 0.0
    assert other["align_worst"] < 0.75 and other["align_missing_min"] == other["align_missing_max"] == 1.0
    assert exact_only["align_worst"] == 0.0 and exact_only["align_missing_max"] == 1.0  # no vectors: no match
    assert synonym["align_mass_max"] < exact_only["align_mass_max"]
    same = _features("Where can I buy a car?", "where can I buy a car", {}, vectors)
    assert same["align_worst"] == 1.0 and same["align_mass_max"] == 0.0


def test_word_vectors_round_trip_int8(tmp_path: Path) -> None:
    vectors = _toy_vectors()
    vectors.save(tmp_path / "v.npz")
    again = WordVectors.load(tmp_path / "v.npz")
    assert again.index == vectors.index
    assert np.allclose(np.linalg.norm(again.vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(again.vectors @ again.vectors.T - vectors.vectors @ vectors.vectors.T).max() < 0.02


def test_shipped_vectors_align_real_synonyms(verifier: Verifier) -> None:
    assert verifier.vectors is not None
    best = verifier.vectors.best_matches(["purchase", "physician", "banana"], ["buy", "doctor"])
    assert best[0] > best[2] and best[1] > best[2]


def test_verifier_serves_the_cache_tests_paraphrase(verifier: Verifier) -> None:
    # the pair tests/unit/cache/test_semantic.py and tests/integration/test_cache_http.py rely on (cosine 0.978)
    verdict = verifier.check("How can I reverse a Python list?", "How do I reverse a list in Python?", 0.978)
    assert verdict.accept and verdict.reason == "ok"


def test_fit_trees_learns_a_threshold_and_the_lower_bound_is_conservative() -> None:
    from benchmarks.calibrate_cache import fit_trees, precision_lower_bound

    rng = np.random.default_rng(1)
    x = rng.random((2000, len(FEATURE_NAMES)))
    y = ((x[:, 0] > 0.6) ^ (rng.random(2000) < 0.05)).astype(float)  # 5% label noise
    model = fit_trees(x, y, trees=30, depth=2, rate=0.3)
    low, high = [0.5] * len(FEATURE_NAMES), [0.5] * len(FEATURE_NAMES)
    low[0], high[0] = 0.3, 0.9
    assert model.probability(low) < 0.2 < 0.8 < model.probability(high)
    assert precision_lower_bound(95, 100, 0.0) == pytest.approx(0.95)
    assert precision_lower_bound(95, 100, 1.645) < 0.95 < precision_lower_bound(950, 1000, 1.645) + 0.02
    assert precision_lower_bound(0, 0, 1.645) == 1.0


def test_same_question_ignores_case_spacing_and_outer_punctuation_only() -> None:
    from cache.verify import same_question

    assert same_question("What is the boiling point of water?", "what is the  boiling point of water")
    assert same_question("Hello, world!", "hello world")
    assert not same_question("Is it 3.5?", "Is it 35?")  # punctuation inside a word is kept
    assert not same_question("don't stop", "dont stop")
    assert not same_question("?", "!")  # no words at all: nothing to call the same
    assert not same_question("What is water?", "What is the water?")


def test_an_identical_question_is_accepted_below_the_floor(verifier: Verifier) -> None:
    verdict = verifier.check("What is the boiling point of water?", "what is the boiling point of water", 0.949)
    assert (verdict.accept, verdict.reason) == (True, "identical")
    assert verifier.check("What is the boiling point?", "What is the melting point?", 0.949).reason == "below-floor"
