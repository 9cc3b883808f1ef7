"""``run_replay``: requests in, a JSON-able report out (the terminal table, JSON and HTML all render it)."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.replay.engine import Prepared, Progress, Verdicts, _quiet, prepare
from cache.replay.pricing import Costs, price
from cache.replay.records import Judge, ReadReport, ReplayRequest
from cache.replay.sweep import SEMANTIC, Run, Setting, judge_hits, simulate, summarize

if TYPE_CHECKING:
    from cache.embedder import Embedder
    from cache.verify import Verifier

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.80 + 0.01 * i, 2) for i in range(20))
DEFAULT_BANDS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99, 1.0)


@dataclass(frozen=True)
class ReplayOptions:
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    default_threshold: float | None = None  # the live floor (deja.cache.threshold); None: the verifier's
    ttl_seconds: float = 86400.0
    top_k: int = 5
    depth: int = 10  # nearest earlier items kept per item (>= top_k: some are not stored)
    max_semantic_temperature: float = 1.0
    normalize: bool = True  # compression's lossless pass before keying, as live unless compression is off
    target_wrong_rate: float = 0.02
    samples_per_band: int = 5
    bands: tuple[float, ...] = DEFAULT_BANDS
    price_as: str | None = None
    cutoffs: tuple[float, ...] = ()  # other classifier cutoffs to try, each a mode of its own
    seed: int = 17
    source: dict[str, Any] = field(default_factory=dict)


def _settings(options: ReplayOptions, default: float) -> list[Setting]:
    thresholds = sorted({round(t, 4) for t in (*options.thresholds, default)})
    modes = [(True, None), (False, None), *((True, c) for c in options.cutoffs)]
    return [Setting(t, verifier, cutoff) for verifier, cutoff in modes for t in thresholds]


def modes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The modes of the rows, in the order they first appear."""
    return list(dict.fromkeys(r["mode"] for r in rows))


def recommend(rows: Sequence[dict[str, Any]], mode: str, target: float) -> float | None:
    """The lowest threshold whose measured wrong-hit rate, and every higher threshold's, stays within
    ``target``; None without judged hits. Only semantic hits are judged (exact hits are the same request)."""
    ordered = sorted((r for r in rows if r["mode"] == mode), key=lambda r: -r["threshold"])
    best = None
    for row in ordered:
        if row["wrong_rate"] is None:
            if row["semantic"]:
                return best  # hits nobody judged: no claim below this point
            continue
        if row["wrong_rate"] > target:
            return best
        best = row["threshold"]
    return best


def _band(similarity: float, bands: Sequence[float]) -> int | None:
    for b in range(len(bands) - 1):
        if bands[b] <= similarity < bands[b + 1] or (b == len(bands) - 2 and similarity == bands[-1]):
            return b
    return None


def samples(prep: Prepared, served: Run, cosine: Run, verdicts: Verdicts, judge: Judge,
            options: ReplayOptions) -> list[dict[str, Any]]:
    """Per similarity band: a sample of the hits the verifier lets through at the lowest threshold, and of
    the cosine-only hits it refuses (with its reason), each judged right / wrong / unjudged."""
    rng = random.Random(options.seed)
    bands = options.bands
    chosen: dict[str, list[list[int]]] = {"hits": [[] for _ in bands[1:]], "refused": [[] for _ in bands[1:]]}
    picks = (("hits", served, served.kind == SEMANTIC),
             ("refused", cosine, (cosine.kind == SEMANTIC) & (served.kind != SEMANTIC)))
    for name, run, mask in picks:
        for i in np.flatnonzero(mask):
            b = _band(float(run.similarity[i]), bands)
            if b is not None:
                chosen[name][b].append(int(i))
    out = []
    for b in range(len(bands) - 1):
        band: dict[str, Any] = {"band": f"{bands[b]:.2f}-{bands[b + 1]:.2f}"}
        for name, run, _ in picks:
            indices = chosen[name][b]
            band[f"n_{name}"] = len(indices)
            picked = sorted(rng.sample(indices, min(options.samples_per_band, len(indices))))
            band[name] = [_judged_example(prep, run, i, verdicts, judge) for i in picked]
        out.append(band)
    return out


def _judged_example(prep: Prepared, run: Run, i: int, verdicts: Verdicts, judge: Judge) -> dict[str, Any]:
    item, cand, sim = prep.item_of[i], int(run.served[i]), float(run.similarity[i])
    j = verdicts(item, cand, sim)
    query, cached = prep.items.query[item] or "", prep.items.query[cand] or ""
    right = judge.right(query, cached, prep.requests[i].label, prep.items.label[cand])
    return {"query": query, "cached": cached, "similarity": round(sim, 4), "score": round(j.score, 4),
            "reason": j.reason, "judged": {True: "right", False: "wrong", None: "unjudged"}[right]}


async def run_replay(requests: Sequence[ReplayRequest], embedder: Embedder, verifier: Verifier, *,
                     judge: Judge | None = None, options: ReplayOptions | None = None,
                     read: ReadReport | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Replay ``requests`` (time order) through the cache offline and report every setting."""
    options = options or ReplayOptions()
    judge = judge or Judge()
    timing: dict[str, float] = {}
    started = time.perf_counter()
    prep = await prepare(requests, embedder, depth=max(options.depth, options.top_k),
                         max_semantic_temperature=options.max_semantic_temperature,
                         normalize=options.normalize, progress=progress)
    timing["prepare_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    costs = price(prep.requests, price_as=options.price_as)
    timing["price_s"] = time.perf_counter() - mark
    default = options.default_threshold
    default = float(verifier.default_min_similarity) if default is None else default
    verdicts = Verdicts(prep, verifier)
    settings = _settings(options, default)
    low, cosine_low = Setting(settings[0].threshold, True), Setting(settings[0].threshold, False)
    rows, runs = _sweep(prep, costs, verdicts, judge, settings, {low, cosine_low}, options, progress)
    timing["sweep_s"] = time.perf_counter() - mark - timing["price_s"]
    report = {
        "source": options.source,
        "read": {"inputs": read.read if read else len(requests), "skipped": dict(read.skipped) if read else {}},
        "requests": len(prep.requests),
        "distinct_requests": prep.n_items,
        "embedded_texts": prep.embedded,
        "verifier_checks": verdicts.checked,
        "options": {"ttl_seconds": options.ttl_seconds, "top_k": options.top_k,
                    "max_semantic_temperature": options.max_semantic_temperature,
                    "target_wrong_rate": options.target_wrong_rate, "price_as": options.price_as,
                    "cutoff": float(verifier.params.cutoff), "cutoffs": list(options.cutoffs)},
        "default": {"threshold": default, "verifier": True},
        "rows": rows,
        "recommended": {mode: recommend(rows, mode, options.target_wrong_rate) for mode in modes(rows)},
        "labelled": any(r["right"] or r["wrong"] for r in rows),
        "samples": samples(prep, runs[low], runs[cosine_low], verdicts, judge, options),
        "costs": _cost_notes(costs),
    }
    timing["total_s"] = time.perf_counter() - started
    report["timing"] = {k: round(v, 2) for k, v in timing.items()}
    return report


def _sweep(prep: Prepared, costs: Costs, verdicts: Verdicts, judge: Judge, settings: list[Setting],
           keep: set[Setting], options: ReplayOptions,
           progress: Progress) -> tuple[list[dict[str, Any]], dict[Setting, Run]]:
    """A report row per setting; the runs of ``keep`` are returned too (the samples read them)."""
    rows, runs = [], {}
    memo: dict[tuple[str | None, int, int], bool | None] = {}
    progress("sweep", 0, len(settings))
    for done, setting in enumerate(settings, 1):
        run = simulate(prep, setting, verdicts, ttl=options.ttl_seconds, top_k=options.top_k)
        judged = judge_hits(prep, run, judge, memo)
        rows.append(summarize(run, costs, judged))
        if setting in keep:
            runs[setting] = run
        progress("sweep", done, len(settings))
    return rows, runs


def _cost_notes(costs: Costs) -> dict[str, Any]:
    return {"usd_total": float(costs.usd.sum()), "tokens_total": int(costs.tokens.sum()),
            "prompt_tokens_counted": costs.counted, "unpriced_models": sorted(costs.unpriced),
            "latency_known": int((~np.isnan(costs.latency_ms)).sum())}
