"""The replay's cheap pass: for one setting (floor, verifier on or off), walk the requests in time order as
the live cache would and record each decision. Run once per setting; nothing is embedded again.

Per request, as :class:`cache.semantic.SemanticCache` decides: an exact hit when its exact key was stored by
an earlier miss within the TTL; else, when the semantic tier applies, the ``top_k`` stored candidates best
first, stopping below the floor, serving the first the verifier accepts; else a miss, which stores the
request. Hits are not stored (as live). Differences from live, by design: the cache has no capacity limit
(no LRU eviction), every miss is assumed to get a complete (cacheable) answer, and the candidates come from
each item's neighbour list (exact for its first request; a later repeat sees only the ``depth`` nearest of
all items among those stored since).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cache.replay.engine import Judgement, Prepared, Verdicts
from cache.replay.pricing import Costs
from cache.replay.records import Judge
from cache.verify import same_question

MISS, EXACT, SEMANTIC = 0, 1, 2
#: Miss reasons besides the verifier's: no stored entry of the scope to compare, the best one below the
#: floor, or a request the semantic tier does not apply to (not plain text, or too hot a temperature).
NO_CANDIDATE, BELOW_FLOOR, EXACT_ONLY = "no-candidate", "below-floor", "exact-only"


@dataclass(frozen=True)
class Setting:
    threshold: float
    verifier: bool
    cutoff: float | None = None  # the verifier's classifier cutoff; None: the shipped one

    @property
    def mode(self) -> str:
        """``verifier``, ``cosine``, or ``verifier c=0.60`` for another classifier cutoff."""
        if not self.verifier:
            return "cosine"
        return "verifier" if self.cutoff is None else f"verifier c={self.cutoff:.2f}"

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.threshold:.3f}"


def accepts(judgement: Judgement, cutoff: float | None) -> bool:
    """The verifier's verdict, or the same with another classifier cutoff (hard rules and 'identical' hold)."""
    if cutoff is None or judgement.reason not in ("ok", "classifier"):
        return judgement.accept
    return judgement.score >= cutoff


@dataclass
class Run:
    setting: Setting
    kind: np.ndarray  # (n,) int8: MISS, EXACT, SEMANTIC
    served: np.ndarray  # (n,) int64: the item whose answer is served, -1 on a miss
    similarity: np.ndarray  # (n,) float64: of the served entry (1.0 exact), else the best compared; NaN if none
    score: np.ndarray  # (n,) float64: the verifier's score of the served entry (NaN without one)
    reason: list[str | None] = field(default_factory=list)  # why a miss missed


def simulate(prepared: Prepared, setting: Setting, verdicts: Verdicts | None, *, ttl: float,
             top_k: int) -> Run:
    """Every request's decision under ``setting`` (``verdicts`` is required when ``setting.verifier``)."""
    n = len(prepared.requests)
    kind, served = [MISS] * n, [-1] * n
    similarity, score = [math.nan] * n, [math.nan] * n
    reason: list[str | None] = [None] * n
    stored = [-math.inf] * prepared.n_items
    semantic, candidates, floor = prepared.items.semantic, prepared.candidates, setting.threshold
    check, cutoff = (verdicts if setting.verifier else None), setting.cutoff
    for i, (request, item) in enumerate(zip(prepared.requests, prepared.item_of, strict=True)):
        now = request.ts
        if now - stored[item] < ttl:
            kind[i], served[i], similarity[i] = EXACT, item, 1.0
            continue
        if not semantic[item]:
            reason[i] = EXACT_ONLY
            stored[item] = now
            continue
        compared, rejected = 0, None
        for candidate, cosine in candidates[item]:
            if now - stored[candidate] >= ttl:
                continue  # never stored, or expired
            if compared == 0:
                similarity[i] = cosine  # the best candidate compared, as LookupResult.best_similarity
            compared += 1
            if compared > top_k or (cosine < floor and not _same(prepared, item, candidate)):
                break
            if check is not None:
                judgement = check(item, candidate, cosine)
                if not accepts(judgement, cutoff):  # refused by another cutoff: the classifier refused it
                    rejected = rejected or ("classifier" if judgement.reason == "ok" else judgement.reason)
                    continue
                score[i] = judgement.score
            kind[i], served[i], similarity[i] = SEMANTIC, candidate, cosine
            break
        if kind[i] == MISS:
            reason[i] = rejected or (BELOW_FLOOR if compared else NO_CANDIDATE)
            stored[item] = now
    return Run(setting, np.array(kind, np.int8), np.array(served, np.int64), np.array(similarity),
               np.array(score), reason)


def _same(prepared: Prepared, item: int, candidate: int) -> bool:
    """The same question retyped (case, spacing, punctuation around words): served below the floor, as live."""
    a, b = prepared.items.query[item], prepared.items.query[candidate]
    return a is not None and b is not None and same_question(a, b)


@dataclass(frozen=True)
class Judged:
    right: int
    wrong: int
    unjudged: int

    @property
    def wrong_rate(self) -> float | None:
        judged = self.right + self.wrong
        return self.wrong / judged if judged else None


def judge_hits(prepared: Prepared, run: Run, judge: Judge,
               memo: dict[tuple[str | None, int, int], bool | None] | None = None) -> Judged:
    """Right / wrong / unjudged counts of the semantic hits (``memo`` carries judgements across runs)."""
    memo = {} if memo is None else memo
    queries, labels = prepared.items.query, prepared.items.label
    counts: Counter[bool | None] = Counter()
    for i in np.flatnonzero(run.kind == SEMANTIC):
        item, served, label = prepared.item_of[i], int(run.served[i]), prepared.requests[i].label
        key = (label, item, served)
        if key not in memo:
            memo[key] = judge.right(queries[item] or "", queries[served] or "", label, labels[served])
        counts[memo[key]] += 1
    return Judged(counts[True], counts[False], counts[None])


def summarize(run: Run, costs: Costs, judged: Judged) -> dict[str, object]:
    """One row of the report: hit counts, savings and (with labels) the wrong-hit rate."""
    n = len(run.kind)
    hits = run.kind != MISS
    latency = costs.latency_ms[hits]
    known = ~np.isnan(latency)
    reasons = Counter(r for r in run.reason if r is not None)
    return {
        "setting": run.setting.name,
        "threshold": run.setting.threshold,
        "verifier": run.setting.verifier,
        "mode": run.setting.mode,
        "requests": n,
        "hits": int(hits.sum()),
        "exact": int((run.kind == EXACT).sum()),
        "semantic": int((run.kind == SEMANTIC).sum()),
        "hit_rate": float(hits.mean()) if n else 0.0,
        "tokens_saved": int(costs.tokens[hits].sum()),
        "usd_saved": float(costs.usd[hits].sum()),
        "usd_total": float(costs.usd.sum()),
        "latency_saved_s": float(latency[known].sum()) / 1000.0,
        "latency_known_hits": int(known.sum()),
        "right": judged.right,
        "wrong": judged.wrong,
        "unjudged": judged.unjudged,
        "wrong_rate": judged.wrong_rate,
        "miss_reasons": dict(reasons.most_common()),
    }
