"""The lossless text pass: meaning-preserving by construction."""

from __future__ import annotations

import json
import textwrap

from compression.text import DEDUP_MIN_CHARS, minify_json, normalize_text, split_segments

PYTHON = textwrap.dedent(
    '''\
    import json


    def load(path: str) -> dict:
        """Load   a   file."""
        with open(path) as handle:    # spaces kept inside code
            data = json.load(handle)



        if not data:
            raise ValueError("empty  file")
        return data
    '''
)

PRETTY = json.dumps(
    {"user": {"id": 42, "name": "Ada  Lovelace", "tags": ["a", "b"], "ratio": 1e-05, "ok": True}, "n": None},
    indent=4,
)


def test_whitespace_runs_collapse_inside_lines_but_indentation_stays() -> None:
    text = "Hello     world.   \n\n\n\n\nserver:\n    port:   8080\n\tname: x   \n"
    assert normalize_text(text) == "Hello world.\n\nserver:\n    port: 8080\n\tname: x"


def test_fenced_python_is_byte_identical_and_still_compiles() -> None:
    text = f"Please   review  this:\n\n\n\n```python\n{PYTHON}```\n\n\nThanks    a lot."
    out = normalize_text(text)
    compile(PYTHON, "<before>", "exec")
    fenced = out.split("```python\n", 1)[1].split("```", 1)[0]
    assert fenced == PYTHON
    compile(fenced, "<after>", "exec")
    assert out.startswith("Please review this:\n\n```python\n")
    assert out.endswith("```\n\nThanks a lot.")


def test_unclosed_fence_keeps_the_rest_untouched() -> None:
    text = "Look:\n```\nx  =  1   \n\n\n\ny = 2"
    assert normalize_text(text) == text


def test_whole_text_json_is_minified_and_parses_equal() -> None:
    out = minify_json(PRETTY)
    assert out is not None and len(out) < len(PRETTY)
    assert json.loads(out) == json.loads(PRETTY)
    assert '"Ada  Lovelace"' in out  # strings are never touched
    assert normalize_text(PRETTY) == out


def test_json_number_spellings_survive() -> None:
    text = '{\n  "big": 1E400,\n  "f": 1.50,\n  "e": "\\u00e9"\n}'
    out = normalize_text(text)
    assert out == '{"big":1E400,"f":1.50,"e":"\\u00e9"}'
    assert json.loads(out) == json.loads(text)


def test_json_embedded_in_prose_and_json_fences_are_minified() -> None:
    text = f"The tool said:\n{PRETTY}\nWhat   now?\n\n```json\n{PRETTY}\n```\n"
    out = normalize_text(text)
    lines = out.split("\n")
    assert lines[0] == "The tool said:"
    assert json.loads(lines[1]) == json.loads(PRETTY) and "\n" not in lines[1]
    assert lines[2] == "What now?"
    assert lines[4] == "```json" and json.loads(lines[5]) == json.loads(PRETTY) and lines[6] == "```"


def test_things_that_only_look_like_json_are_left_alone() -> None:
    assert minify_json("[1] Smith et al.") is None
    assert minify_json('"just a string"') is None
    assert minify_json("{not: json}") is None
    text = "[1] Smith  et al.\n{ broken json\n  here }"
    assert normalize_text(text) == "[1] Smith et al.\n{ broken json\n  here }"


def test_exact_duplicate_blocks_are_dropped_once_seen() -> None:
    para = "This paragraph is long enough to count as a block worth deduplicating."
    short = "See above."
    text = f"{para}\n\n{short}\n\n{para}\n\n{short}\n\nEnd."
    assert len(para) >= DEDUP_MIN_CHARS > len(short)
    assert normalize_text(text) == f"{para}\n\n{short}\n\n{short}\n\nEnd."


def test_duplicate_fenced_block_is_dropped() -> None:
    block = f"```python\n{PYTHON}```"
    out = normalize_text(f"A:\n{block}\nB:\n{block}\nC.")
    assert out == f"A:\n{block}\nB:\nC."


def test_segments_split_at_fences() -> None:
    segments = split_segments("a\n```py\nx\n\n```\nb")
    assert [(s.code, s.text) for s in segments] == [(False, "a"), (True, "```py\nx\n\n```"), (False, "b")]


def test_normalisation_is_idempotent_and_deterministic() -> None:
    text = f"Intro   text.\n\n\n{PRETTY}\n\n```python\n{PYTHON}```\n   trailing   \n"
    once = normalize_text(text)
    assert normalize_text(text) == once
    assert normalize_text(once) == once


def test_whitespace_only_text_is_kept() -> None:
    assert normalize_text("   ") == "   "
    assert normalize_text("") == ""
