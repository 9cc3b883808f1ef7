"""A step skipped because the prompt was too long for it says so in a header."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from router.pipeline.cache_step import skipped_headers
from router.pipeline.steps import Lookup


def _lookup(reason: str | None) -> Lookup:
    result: Any = SimpleNamespace(rejected_reason=reason, entry=None)
    return Lookup("miss", result=result)


def test_a_candidate_too_long_to_verify_is_named() -> None:
    assert skipped_headers(_lookup("too-long")) == {"X-Deja-Skipped": "verifier:too-long"}


def test_other_misses_add_nothing() -> None:
    assert skipped_headers(_lookup("classifier")) == {}
    assert skipped_headers(_lookup(None)) == {}
    assert skipped_headers(Lookup("bypass")) == {}
