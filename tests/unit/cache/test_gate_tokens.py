"""The gate's own word split gives exactly the bundled tokenizer's ids, from the tokenizer's call or from the words it
remembers; the remembered words stay bounded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cache.gate
from cache.gate import StaticEmbedder

# the shared data folder sits next to the checkout (main) or one level above it (a worktree)
QQP = next((p / "shared" / "data" / "qqp-dev.jsonl" for p in Path(__file__).resolve().parents
            if (p / "shared" / "data" / "qqp-dev.jsonl").exists()), Path("qqp-dev.jsonl"))

_GATE = StaticEmbedder.load()


def tokenizer_ids(gate: StaticEmbedder, text: str) -> list[int]:
    return list(gate._tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]


@pytest.mark.skipif(not QQP.exists(), reason="the shared QQP pairs are not next to the checkout")
def test_every_quora_question_gets_the_tokenizers_ids_first_and_from_memory() -> None:
    gate = StaticEmbedder.load()
    texts = []
    with QQP.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            texts += [row["text_a"], row["text_b"]]
    texts = list(dict.fromkeys(texts))[:6000]
    expected = [tokenizer_ids(gate, t) for t in texts]
    assert [gate.token_ids(t) for t in texts] == expected  # first sight: learned from the tokenizer's call
    remembered = len(gate._words)
    assert remembered > 1000
    assert [gate.token_ids(t) for t in texts] == expected  # again: read off the remembered words
    assert len(gate._words) == remembered


# ASCII-heavy text with the characters the word split has to get right: punctuation of every ASCII range,
# digits, tabs, line breaks, control characters (the normaliser drops them), accents and CJK (not plain).
_CHARS = st.sampled_from(list("abcXYZ019 \t\n\r!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") +
                         ["\x00", "\x07", "\x0b", "\x0c", "\x1f", "\x7f", "é", "ß", "中", "\u00a0", "\u2019"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(_CHARS, max_size=40) | st.text(max_size=10), max_size=6))
@example(["foo\x0bbar"]).via("a control character joins the letters around it")
@example(["ab\x01cd x\x7fy a\x0cb"]).via("more controls")
@example(["U.S.A. don't", " café\tau\nlait?"]).via("punctuation, an accent")
@example(["What does [SEP] mean? [CLS][MASK] [PAD]x[UNK]"]).via("special tokens, matched before normalising")
def test_any_text_gets_the_tokenizers_ids_twice(parts: list[str]) -> None:
    text = "".join(parts)
    expected = tokenizer_ids(_GATE, text)
    assert _GATE.token_ids(text) == expected
    assert _GATE.token_ids(text) == expected
    # every run of letters and digits and every other character of it seen before, as words of another text
    _GATE.token_ids(re.sub(r"([^A-Za-z0-9])", r" \1 ", text))
    assert _GATE.token_ids(text) == expected


def test_remembered_words_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache.gate, "WORD_CACHE_SIZE", 5)
    gate = StaticEmbedder.load()
    long_word = "pneumonoultramicroscopicsilicovolcanoconiosis"
    text = f"how do I spell {long_word} without any mistakes at all"
    assert gate.token_ids(text) == tokenizer_ids(gate, text)
    assert len(gate._words) == 5 and long_word not in gate._words
    gate.token_ids("the " * 50 + "zebra quietly")  # full: nothing more is remembered
    assert len(gate._words) == 5
    assert gate.token_ids(text) == tokenizer_ids(gate, text)


@pytest.mark.parametrize("text", ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "What does [SEP] mean?"])
def test_a_special_tokens_text_is_never_read_off_remembered_words(text: str) -> None:
    gate = StaticEmbedder.load()
    # its pieces, learned from other texts: "[" and "]", and the inner word in lower case
    gate.token_ids("Why do I get [ and ] in my output?")
    gate.token_ids("What does sep mean for cls and mask and pad or unk?")
    assert {"[", "]", "sep", "cls", "mask", "pad", "unk"} <= set(gate._words)
    assert gate.token_ids(text) == tokenizer_ids(gate, text)


def test_long_and_many_piece_words_are_not_remembered() -> None:
    gate = StaticEmbedder.load()
    text = "supercalifragilistic xqzvjkwpt counterrevolutionaries cat"
    assert gate.token_ids(text) == tokenizer_ids(gate, text)
    pieces = {w: len(tokenizer_ids(gate, w)) for w in text.split()}
    for word, count in pieces.items():
        remembered = len(word) <= cache.gate.WORD_CACHE_MAX_CHARS and count <= cache.gate.WORD_CACHE_MAX_PIECES
        assert (word in gate._words) == remembered
    assert "cat" in gate._words and "supercalifragilistic" not in gate._words
