"""The cache's explanation of each lookup, read from today's LookupResult and from a richer one."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cache import LookupResult
from cache.store import CacheEntry
from router.auth.keys import ANONYMOUS, MASTER, Limits, Principal
from router.pipeline.cache_debug import debug_allowed, explain, metric_reason

ENTRY = CacheEntry(id="e", scope_key="s", query="q", response={}, created_at=0.0, expires_at=1.0, namespace="",
                   model="m")


def _key(metadata: dict[str, object]) -> Principal:
    return Principal(key_id="key_1", tenant="t", name="k", is_master=False, allowed_models=(), limits=Limits(),
                     metadata=metadata)


def test_misses_say_why_from_todays_lookup_result() -> None:
    refused = explain(LookupResult("miss", None, None, 0.9492, 1, "classifier"), floor=0.8, semantic=True)
    assert refused.header() == "decision=miss; reason=classifier; similarity=0.9492; floor=0.8000; candidates=1"
    assert refused.rejected and metric_reason(refused.reason) == "classifier"
    low = explain(LookupResult("miss", None, None, 0.5, 3, None), floor=0.97, semantic=True)
    assert (low.reason, low.similarity) == ("below-floor", 0.5)
    empty = explain(LookupResult("miss", None, None, None, 0, None), floor=0.97, semantic=True)
    assert empty.reason == "no-candidate" and empty.rejected
    exact_only = explain(LookupResult("miss", None, None, None, 0, None), floor=0.97, semantic=False)
    assert exact_only.header() == "decision=miss; reason=not-semantic; candidates=0" and not exact_only.rejected


def test_hits_say_how_they_matched() -> None:
    exact = explain(LookupResult("exact", ENTRY, 1.0, 1.0, 0, None), floor=0.97, semantic=True)
    assert exact.header() == "decision=hit-exact; reason=exact-match; similarity=1.0000; candidates=0"
    semantic = explain(LookupResult("semantic", ENTRY, 0.98, 0.99, 2, "classifier"), floor=0.97, semantic=True)
    assert (semantic.decision, semantic.reason, semantic.similarity) == ("hit-semantic", "accepted", 0.98)
    assert not semantic.rejected


@dataclass(frozen=True)
class RicherResult(LookupResult):
    """What a cache that reports the floor, the deciding stage and the verifier's score and reason returns."""

    floor: float | None = None
    stage: str | None = None
    verifier_score: float | None = None
    verifier_reason: str | None = None


def test_richer_lookup_results_are_read_when_present() -> None:
    base = RicherResult("miss", None, None, 0.96, 2, "classifier", floor=0.95, stage="verifier",
                        verifier_score=0.61, verifier_reason="classifier")
    header = explain(base, floor=0.5, semantic=True).header()
    assert header == ("decision=miss; reason=classifier; similarity=0.9600; floor=0.9500; score=0.6100; "
                      "candidates=2; stage=verifier")
    hit = explain(replace(base, kind="semantic", entry=ENTRY, similarity=0.97, verifier_reason="ok",
                          verifier_score=0.9), floor=0.95, semantic=True)
    assert (hit.reason, hit.score) == ("ok", 0.9)
    gate = explain(replace(base, verifier_reason="gate", rejected_reason="gate"), floor=0.95, semantic=True)
    assert metric_reason(gate.reason) == "other"  # the metric's label set stays bounded


def test_only_the_master_key_permitted_keys_and_open_mode_may_debug() -> None:
    ask = {"X-Deja-Cache-Debug": "1"}
    assert debug_allowed(ask, MASTER) and debug_allowed(ask, ANONYMOUS)
    assert debug_allowed(ask, _key({"cache_debug": True}))
    assert not debug_allowed(ask, _key({})) and not debug_allowed(ask, _key({"cache_debug": "true"}))
    assert not debug_allowed({"X-Deja-Cache-Debug": "0"}, MASTER) and not debug_allowed({}, MASTER)
