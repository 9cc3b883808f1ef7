"""Why the cache answered, or did not: one ``Explanation`` per lookup, for the debug header, the usage row
(``similarity``, ``cache_reason``) and ``deja_cache_rejections_total{reason}``.

Request ``X-Deja-Cache-Debug: 1`` returns ``X-Deja-Cache-Debug: decision=miss; reason=classifier;
similarity=0.9486; floor=0.8000; score=0.7133; candidates=3`` on hits and misses alike. It is honoured for the
master key, for keys whose metadata says ``"cache_debug": true``, and when deja runs open (no master key:
everyone is the anonymous principal); anyone else's header is ignored.

``reason``: ``exact-match``; on a semantic hit the verifier's reason (``ok``, ``identical``), else ``accepted``;
on a miss ``below-floor`` (the best candidate is under the floor), the verifier's refusal (``classifier`` or
a hard rule: ``number-mismatch``, ``name-mismatch``, ``negation-mismatch``), ``no-candidate`` (nothing of the
request's scope is cached), ``not-semantic`` (not a plain-text user message, or too high a temperature:
exact tier only) or ``max-age`` (an entry was found, older than the request's cache ``max-age``).
``similarity`` is the transformer's cosine, except when the gate decided (``reason=below-gate``) or the verifier
refused before the transformer ran (``stage=verifier``): then it is the gate's static cosine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cache import LookupResult
    from router.auth.keys import Principal
    from router.pipeline.steps import Lookup

DEBUG_HEADER = "X-Deja-Cache-Debug"
NO_CANDIDATE, NOT_SEMANTIC, BELOW_FLOOR, MAX_AGE = "no-candidate", "not-semantic", "below-floor", "max-age"
#: The label values of ``deja_cache_rejections_total``; any other reason is counted as "other".
REJECTION_REASONS = frozenset({BELOW_FLOOR, NO_CANDIDATE, "below-gate", "classifier", "number-mismatch",
                               "name-mismatch", "negation-mismatch", "too-long"})
TOO_LARGE = "too-large"  # the query is over cache.max_query_chars: the semantic tier was skipped


def _field(result: LookupResult, *names: str) -> Any:
    """The first of ``names`` that ``result`` has and sets (newer caches add fields; older ones lack them)."""
    for name in names:
        value = getattr(result, name, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Explanation:
    decision: str  # hit-exact | hit-semantic | miss
    reason: str
    similarity: float | None  # the served entry's on a hit, else the best candidate's (None: nothing compared)
    floor: float | None  # None when the semantic tier did not apply
    score: float | None = None  # the verifier's, when the cache reports it
    candidates: int = 0
    stage: str | None = None  # which stage decided, when the cache reports it

    @property
    def rejected(self) -> bool:
        """A semantic lookup that served nothing."""
        return self.decision == "miss" and self.reason not in (NOT_SEMANTIC, MAX_AGE, TOO_LARGE)

    def header(self) -> str:
        parts = [f"decision={self.decision}", f"reason={self.reason}"]
        for name, value in (("similarity", self.similarity), ("floor", self.floor), ("score", self.score)):
            if value is not None:
                parts.append(f"{name}={value:.4f}")
        parts.append(f"candidates={self.candidates}")
        if self.stage is not None:
            parts.append(f"stage={self.stage}")
        return "; ".join(parts)


def explain(result: LookupResult, *, floor: float, semantic: bool) -> Explanation:
    """The explanation of a completed lookup; ``semantic``: whether the semantic tier applied to it."""
    score, stage = _field(result, "verifier_score", "score"), _field(result, "stage", "deciding_stage")
    floor = float(_field(result, "floor") or floor)
    if result.kind == "exact":
        return Explanation("hit-exact", "exact-match", 1.0, None, candidates=0, stage=stage)
    if result.kind == "semantic":
        reason = _field(result, "verifier_reason") or "accepted"
        return Explanation("hit-semantic", str(reason), result.similarity, floor, score, result.candidates, stage)
    if _field(result, "skipped") == "too_large":
        return Explanation("miss", TOO_LARGE, None, None)
    if not semantic:
        return Explanation("miss", NOT_SEMANTIC, None, None)
    reason = _field(result, "verifier_reason", "rejected_reason")
    if reason is None:
        below = result.best_similarity is not None and result.best_similarity < floor
        reason = BELOW_FLOOR if below else NO_CANDIDATE
    similarity = result.best_similarity
    if similarity is None and reason == "below-gate":  # the gate's (static) cosine and threshold decided
        similarity = _field(result, "gate_similarity")
        floor = float(_field(result, "gate_threshold") or floor)
    elif similarity is None and stage == "verifier":  # refused at any cosine: the gate's is the one computed
        similarity = _field(result, "gate_similarity")
    return Explanation("miss", str(reason), similarity, floor, score, result.candidates, stage)


def too_old(result: LookupResult) -> Explanation:
    """An entry was found but is older than the client accepts (the request's cache ``max-age``)."""
    return Explanation("miss", MAX_AGE, result.similarity, None, candidates=result.candidates)


def metric_reason(reason: str) -> str:
    return reason if reason in REJECTION_REASONS else "other"


def debug_headers(headers: Mapping[str, str], principal: Principal, lookup: Lookup) -> dict[str, str]:
    """``{X-Deja-Cache-Debug: ...}`` for an answer when the client asked for it and may have it, else ``{}``."""
    if not debug_allowed(headers, principal):
        return {}
    return {DEBUG_HEADER: lookup.explanation.header() if lookup.explanation else f"decision={lookup.label}"}


def debug_allowed(headers: Mapping[str, str], principal: Principal) -> bool:
    """The client asked for the explanation, and may have it."""
    if headers.get(DEBUG_HEADER, "").strip().lower() not in ("1", "true", "yes", "on"):
        return False
    anonymous = principal.key_id is None and not principal.is_master  # deja runs open: no keys at all
    return principal.is_master or anonymous or principal.metadata.get("cache_debug") is True
