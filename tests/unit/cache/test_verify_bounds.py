"""The verifier's work is bounded whatever a client sends: a size cap, capped quadratic parts, linear rest."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import pytest

from cache import features
from cache.features import (
    MAX_ALIGN_WORDS,
    MAX_SEQUENCE_STEMS,
    WordVectors,
    pair_facts,
    pair_features,
    sequence_ratio,
    text_facts,
)
from cache.verify import MAX_VERIFY_CHARS, Verifier

# the shared data folder sits next to the checkout (main) or one level above it (a worktree)
QQP = next((p / "shared" / "data" / "qqp-dev.jsonl" for p in Path(__file__).resolve().parents
            if (p / "shared" / "data" / "qqp-dev.jsonl").exists()), Path("qqp-dev.jsonl"))


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load_default()


def test_a_text_over_the_cap_is_refused_before_any_work(verifier: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> None:
        raise AssertionError("text_facts must not run on an over-long text")

    monkeypatch.setattr("cache.verify.text_facts", boom)
    query = "word " * 8000
    for a, b in ((query, query + "extra"), ("short question", query), (query, "short question")):
        assert verifier.check(a, b, 0.999).reason == "too-long"
        assert not verifier.check(a, b, 0.999).accept


def test_a_text_at_the_cap_is_still_verified(verifier: Verifier) -> None:
    text = ("what is the capital of france " * 400)[:MAX_VERIFY_CHARS]
    verdict = verifier.check(text, text[:-8] + " germany", 0.999)
    assert verdict.reason != "too-long"


def test_sequence_ratio_reads_only_a_bounded_head() -> None:
    head = [f"w{i}" for i in range(MAX_SEQUENCE_STEMS)]
    assert sequence_ratio(head + ["x"] * 5000, head + ["y"] * 7000) == 1.0
    assert sequence_ratio(["a", "b"], ["a", "c"]) == 0.5


def test_alignment_compares_a_bounded_number_of_words(verifier: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    assert verifier.vectors is not None
    sizes: list[tuple[int, int]] = []
    original = WordVectors.best_matches

    def spy(self: WordVectors, words: Collection[str], others: Collection[str]) -> list[float]:
        sizes.append((len(words), len(others)))
        return original(self, words, others)

    monkeypatch.setattr(WordVectors, "best_matches", spy)
    vocab = sorted(w for w in verifier.vectors.index if w.isalpha() and len(w) > 3)
    a = text_facts(" ".join(vocab[:1000]))
    b = text_facts(" ".join(vocab[1000:2000]))
    params = verifier.params
    pair_features(a, b, pair_facts(a, b), 0.99, params.idf, params.default_idf, verifier.vectors)
    assert sizes and all(n <= MAX_ALIGN_WORDS and m <= MAX_ALIGN_WORDS for n, m in sizes)


def test_near_match_share_counts_shared_five_letter_prefixes() -> None:
    assert features._near_count(["organise", "cat"], ["organization", "dog"]) == 1
    assert features._near_count(["organ"], ["organs"]) == 1
    assert features._near_count(["orga"], ["organisation"]) == 0  # under five letters


@pytest.mark.skipif(not QQP.exists(), reason="QQP dev split not present")
def test_the_caps_never_bind_on_calibration_like_questions() -> None:
    """Every QQP question is far inside the caps, so the shipped trees see the features they were fitted on."""
    with QQP.open(encoding="utf-8") as lines:
        rows = [json.loads(line) for _, line in zip(range(3000), lines, strict=False)]
    for row in rows:
        for text in (row["text_a"], row["text_b"]):
            assert len(text) <= MAX_VERIFY_CHARS
            facts = text_facts(text)
            assert len(facts.stems) <= MAX_SEQUENCE_STEMS and len(facts.content_words) <= MAX_ALIGN_WORDS
