"""``Verifier.best_case`` is exact: a pair it refuses is refused by ``decide`` at every cosine from the floor to 1,
and a pair it may accept is accepted at some cosine there. The cache skips the transformer on its word alone,
so a wrong "refuse" would lose hits and a wrong "may accept" would waste a transformer run."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.verify import COSINE_SLACK, Verdict, Verifier

QUESTIONS = [
    "How do I learn Python?",
    "What is the best way to learn Python programming?",
    "How can I learn Python quickly?",
    "What is the capital of France?",
    "What is the capital city of France?",
    "Which city is the capital of France?",
    "How many people live in Crawford County?",
    "How many people live in Jefferson County?",
    "What was the GATE 2017 cut-off?",
    "What was the GATE 2018 cut-off?",
    "Why is the sky blue?",
    "Why isn't the sky blue?",
    "How do I lose weight fast?",
    "What are some ways to lose weight quickly?",
    "What is the meaning of life?",
    "How do I make money online?",
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load_default()


def _cosines(verifier: Verifier, floor: float) -> list[float]:
    """Every step of the trees' cosine splits in [floor, 1 + slack], on both sides of each split, plus a grid."""
    top = 1.0 + COSINE_SLACK
    cuts = [t for t in verifier._cosine_cuts if floor <= t < top]
    near = [c for t in cuts for c in (t, math.nextafter(t, math.inf))]
    grid = [floor + (top - floor) * i / 50 for i in range(51)]
    return sorted({floor, top, *near, *grid})


@settings(max_examples=150, deadline=None)
@given(a=st.sampled_from(QUESTIONS), b=st.sampled_from(QUESTIONS),
       floor=st.one_of(st.none(), st.floats(min_value=0.5, max_value=1.0)))
def test_best_case_agrees_with_decide_over_every_cosine(verifier: Verifier, a: str, b: str,
                                                        floor: float | None) -> None:
    floor_used = verifier.default_min_similarity if floor is None else floor
    view = verifier.view(a, b)
    best = verifier.best_case(view, min_similarity=floor)
    verdicts = [verifier.decide(view, c, min_similarity=floor) for c in _cosines(verifier, floor_used)]
    assert best.accept == any(v.accept for v in verdicts)
    assert best.score == pytest.approx(max(v.score for v in verdicts))
    for c in (0.3, 0.9, 0.99, 1.0):  # the split check equals the one-call check at any cosine
        assert verifier.decide(view, c, min_similarity=floor) == verifier.check(a, b, c, min_similarity=floor)


@settings(max_examples=150, deadline=None)
@given(a=st.sampled_from(QUESTIONS), b=st.sampled_from(QUESTIONS),
       floor=st.one_of(st.none(), st.floats(min_value=0.5, max_value=1.0)),
       extra=st.lists(st.floats(min_value=-1.0, max_value=1.0 + COSINE_SLACK), max_size=5))
def test_outlook_reads_off_decide_at_every_cosine(verifier: Verifier, a: str, b: str, floor: float | None,
                                                  extra: list[float]) -> None:
    """The cache reads the verdict off the outlook instead of running ``decide``: it must be the very same."""
    floor_used = verifier.default_min_similarity if floor is None else floor
    outlook = verifier.outlook(verifier.view(a, b), min_similarity=floor)
    assert outlook.best == verifier.best_case(verifier.view(a, b), min_similarity=floor)
    for c in [*_cosines(verifier, floor_used), *extra, math.nextafter(floor_used, -math.inf)]:
        assert outlook.at(c) == verifier.decide(outlook.view, c, min_similarity=floor)
    nan = outlook.at(math.nan)  # a NaN cosine passes the floor check; the trees send it left at every split
    assert nan is None or nan == verifier.decide(outlook.view, math.nan, min_similarity=floor)
    assert outlook.at(math.nextafter(1.0 + COSINE_SLACK, math.inf)) in (None, verifier.decide(
        outlook.view, math.nextafter(1.0 + COSINE_SLACK, math.inf), min_similarity=floor))


def test_outlook_has_steps_only_where_the_trees_run(verifier: Verifier) -> None:
    close = verifier.outlook(verifier.view("What is the capital of France?", "What is the capital city of France?"))
    assert close.steps and len(close.steps) == len(close.cuts) + 1
    assert close.at(0.5) == Verdict(False, 0.0, "below-floor")
    assert close.at(1.5) is None  # beyond the steps: the cache asks decide
    assert close.at(math.nan) is None  # not a step either (not "at the floor"): decide runs the trees
    rule = verifier.outlook(verifier.view("What was the GATE 2017 cut-off?", "What was the GATE 2018 cut-off?"))
    assert not rule.steps and rule.at(0.99) == Verdict(False, 0.0, "number-mismatch")


def test_best_case_reasons(verifier: Verifier) -> None:
    rule = verifier.best_case(verifier.view("What was the GATE 2017 cut-off?", "What was the GATE 2018 cut-off?"))
    assert not rule.accept and rule.reason == "number-mismatch"
    same = verifier.best_case(verifier.view("What is the capital of France?", "what is the capital of france"))
    assert same.accept and same.reason == "identical"
    close = verifier.best_case(verifier.view("What is the capital of France?", "What is the capital city of France?"))
    assert close.accept and close.reason == "ok"
    assert not verifier.best_case(verifier.view("Why is the sky blue?", "How do I make money online?")).accept
    assert verifier.best_case(verifier.view("a" * 9000, "a")).reason == "too-long"
    assert verifier.best_case(verifier.view("How do I learn Python?", "How can I learn Python quickly?"),
                              min_similarity=1.5).reason == "below-floor"


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.floats(min_value=-5, max_value=50, allow_nan=False), min_size=33, max_size=33),
                     min_size=1, max_size=4))
def test_trees_walked_together_give_each_row_its_own_probability(verifier: Verifier,
                                                                 rows: list[list[float]]) -> None:
    model = verifier.params.model
    together = model.probabilities(rows)
    assert together == pytest.approx([model.probability(r) for r in rows], abs=1e-12)
