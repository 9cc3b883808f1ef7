"""Semantic-cache hit rate and served-right share on the QQP *test* split, through the real cache code.

    .venv/bin/python -m benchmarks.cache_hit_rate [--quick] [--data ../shared/data/qqp-dev.jsonl]

The cache (``SemanticCache`` over a ``MemoryStore``, one scope) is seeded with every ``text_a`` of the test
split; each ``text_b`` is looked up. A served hit is right when it is the pair's own ``text_a`` and the pair
is a duplicate, or when the stored question is literally the query; anything else served is wrong.

Compared: (a) cosine alone at the lowest static threshold whose served-right share reaches 90% (found on this
same split, which flatters the baseline), (b) deja's default: two stages, the static-embedding gate then the
transformer and the calibrated verifier (never fitted on this split), (c) the same without the gate
(``deja_gate_off``: transformer and verifier on every lookup). The gate's figures (``gate``): its recall (of
the hits (c) serves, the share (b) serves too) and the share of semantic lookups that reach the transformer.
Embeddings come from deja's default embedder (``cache.embedder.create_embedder``; the JSON names it).
Also: lookups/s at concurrency 1 and 32 with embedder threads 1 and 2 (fresh embedder each, so no LRU help),
a pair-by-pair view, what deja's wrong hits are (``deja_pool_wrong``), the static threshold at deja's own
served-right share, and a PNG of served-right vs duplicate hit rate over static thresholds.
Writes ``benchmarks/results/cache_hit_rate.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibrate_cache import accepted, candidate_table
from benchmarks.qqp import (
    DEFAULT_QQP,
    Outcome,
    Pair,
    PoolSetup,
    describe_embedder,
    load_split,
    make_embedder,
    pair_outcome,
    pool_outcome,
    pool_setup,
)
from cache.gate import StaticEmbedder
from cache.scope import build_scope
from cache.semantic import SemanticCache
from cache.store import MemoryStore
from cache.verify import Verifier

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS = np.round(np.arange(0.70, 1.0001, 0.005), 3)
TARGET = 0.90


def _body(text: str) -> dict[str, Any]:
    return {"model": "bench-model", "messages": [{"role": "user", "content": text}], "temperature": 0}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class RunResult:
    outcome: Outcome
    kinds: dict[str, int]
    lookups_per_s: float
    stages: dict[str, int]
    served_ids: dict[int, str]  # pair index -> id of the entry served


async def _seed(cache: SemanticCache, pairs: list[Pair]) -> None:
    for text in sorted({p.text_a for p in pairs}):
        scope, query = build_scope(_body(text), tenant="bench", namespace="qqp")
        await cache.store(scope, _body(text), query, {"answer": text})


async def _lookups(
    cache: SemanticCache, pairs: list[Pair], concurrency: int, threshold: float | None
) -> RunResult:
    kinds = {"exact": 0, "semantic": 0, "miss": 0}
    stages: dict[str, int] = {}
    served_ids: dict[int, str] = {}
    right = served = 0
    queue = list(enumerate(pairs))

    async def worker() -> None:
        nonlocal right, served
        while queue:
            i, pair = queue.pop()
            scope, query = build_scope(_body(pair.text_b), tenant="bench", namespace="qqp")
            result = await cache.lookup(scope, _body(pair.text_b), query, threshold=threshold)
            kinds[result.kind] += 1
            stages[str(result.stage)] = stages.get(str(result.stage), 0) + 1
            if result.entry is not None and result.entry.query is not None:
                served_ids[i] = result.entry.id
                served += 1
                stored = result.entry.query
                right += (stored == pair.text_a and pair.label == 1) or _norm(stored) == _norm(pair.text_b)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    duplicates = sum(p.label for p in pairs)
    return RunResult(Outcome(served, right, duplicates), kinds, len(pairs) / elapsed, stages, served_ids)


def _gate_figures(two: RunResult, one: RunResult) -> dict[str, Any]:
    semantic_lookups = sum(n for stage, n in two.stages.items() if stage in ("gate", "verifier", "transformer"))
    kept = sum(1 for i, entry_id in one.served_ids.items() if two.served_ids.get(i) == entry_id)
    return {
        "recall": round(kept / max(1, len(one.served_ids)), 4),
        "hits_without_gate": len(one.served_ids),
        "hits_kept_by_gate": kept,
        "reach_transformer": round(two.stages.get("transformer", 0) / max(1, semantic_lookups), 4),
        # candidates that passed the gate but the verifier refused at every cosine: no transformer run
        "refused_before_transformer": round(two.stages.get("verifier", 0) / max(1, semantic_lookups), 4),
        "stages": two.stages,
    }


async def _cache(embedder: Any, verifier: Verifier | None, gate: StaticEmbedder | None,
                 pairs: list[Pair]) -> SemanticCache:
    cache = SemanticCache(MemoryStore(ann_dtype="i8" if gate else "f16"), embedder, verifier, gate=gate)
    await cache.start()
    await _seed(cache, pairs)
    return cache


async def through_cache(pairs: list[Pair], static_t: float, speed_sample: int) -> dict[str, Any]:
    """Seed the real caches, then measure (a) static cosine, (b) deja's default, (c) (b) without the gate,
    and lookup speed."""
    verifier = Verifier.load_default()
    gate = StaticEmbedder.load()
    embedder = await make_embedder()
    deja = await _cache(embedder, verifier, gate, pairs)
    out: dict[str, Any] = {"entries": (await deja.stats()).entries, "embedder": describe_embedder(embedder)}
    runs: dict[str, RunResult] = {}
    for name, cache, threshold in (
        ("deja_default", deja, None),
        ("deja_gate_off", await _cache(embedder, verifier, None, pairs), None),
        ("static_cosine", await _cache(embedder, None, None, pairs), static_t),
    ):
        runs[name] = run = await _lookups(cache, pairs, 32, threshold)
        out[name] = {**_summary(run.outcome), "kinds": run.kinds, "stages": run.stages}
    out["gate"] = _gate_figures(runs["deja_default"], runs["deja_gate_off"])
    await embedder.close()
    rng = random.Random(7)
    sample = rng.sample(pairs, min(speed_sample, len(pairs)))
    speed: dict[str, float] = {}
    for threads in (1, 2):
        for concurrency in (1, 32):
            fresh = await make_embedder(threads=threads)  # cold LRU
            timed = SemanticCache(deja.backend_store, fresh, verifier, gate=gate)  # seeded entries, cold embedder
            run = await _lookups(timed, sample, concurrency, None)
            speed[f"threads={threads},concurrency={concurrency}"] = round(run.lookups_per_s, 1)
            await fresh.close()
    out["lookups_per_s"] = speed
    out["speed_sample"] = len(sample)
    await deja.close()
    return out


def _summary(outcome: Outcome) -> dict[str, Any]:
    return {
        "served": outcome.served,
        "right": outcome.right,
        "duplicates": outcome.duplicates,
        "served_right": round(outcome.precision, 4),
        "served_wrong": round(1 - outcome.precision, 4),
        "duplicate_hit_rate": round(outcome.hit_rate, 4),
    }


def simulate(pairs: list[Pair], cache_path: Path | None) -> dict[str, Any]:
    """Offline view of the same split: static threshold curves (pool and pair by pair) and deja's point."""
    setup = pool_setup(pairs, cache_path)
    verifier = Verifier.load_default()
    prob, rules = candidate_table(setup, verifier)
    accept = accepted(setup, prob, rules, verifier.params.rules, verifier.default_min_similarity,
                      verifier.params.cutoff)
    deja_pool = pool_outcome(setup, accept)
    wrong = wrong_kinds(setup, accept)
    pair_ok = np.array([verifier.check(p.text_b, p.text_a, float(c)).accept for p, c in
                        zip(pairs, setup.pair_cosine, strict=True)])
    deja_pair = pair_outcome(setup.labels, pair_ok)
    curve = []
    for t in THRESHOLDS:
        pool = pool_outcome(setup, setup.cand_cosine >= t)
        pair = pair_outcome(setup.labels, setup.pair_cosine >= t)
        curve.append({"threshold": float(t), "pool": _summary(pool), "pair": _summary(pair)})
    static_pool = next((c for c in curve if c["pool"]["served_right"] >= TARGET), curve[-1])
    static_pair = next((c for c in curve if c["pair"]["served_right"] >= TARGET), curve[-1])
    same = next((c for c in curve if c["pool"]["served_right"] >= deja_pool.precision), curve[-1])
    return {"deja_pool": _summary(deja_pool), "deja_pool_wrong": wrong, "deja_pair": _summary(deja_pair),
            "curve": curve, "static_pool_90": static_pool, "static_pair_90": static_pair,
            "static_pool_at_deja_precision": same}


def wrong_kinds(setup: PoolSetup, accept: np.ndarray) -> dict[str, int]:
    """What the wrong served hits are: a duplicate query served another stored question than its partner
    (often a rewording of the partner), a non-duplicate served its own partner (QQP says: not the same
    question), or a non-duplicate served some other stored question."""
    first = np.argmax(accept, axis=1)
    kinds = {"duplicate_served_non_partner": 0, "non_duplicate_served_partner": 0, "non_duplicate_served_other": 0}
    for i in np.nonzero(accept.any(axis=1))[0]:
        j = first[i]
        chosen, label = setup.cand[i, j], setup.labels[i]
        if setup.cand_same[i, j] or (chosen == setup.partner[i] and label == 1):
            continue
        if label == 1:
            kinds["duplicate_served_non_partner"] += 1
        elif chosen == setup.partner[i]:
            kinds["non_duplicate_served_partner"] += 1
        else:
            kinds["non_duplicate_served_other"] += 1
    return kinds


def plot(sim: dict[str, Any], real: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for view, style in (("pool", "-"), ("pair", "--")):
        xs = [c[view]["duplicate_hit_rate"] for c in sim["curve"]]
        ys = [c[view]["served_right"] for c in sim["curve"]]
        ax.plot(xs, ys, style, label=f"static cosine ({view})")
    d = real["deja_default"]
    ax.scatter([d["duplicate_hit_rate"]], [d["served_right"]], color="red", zorder=3,
               label="deja default (cache)")
    p = sim["deja_pair"]
    ax.scatter([p["duplicate_hit_rate"]], [p["served_right"]], color="darkred", marker="x", zorder=3,
               label="deja default (pair by pair)")
    ax.axhline(TARGET, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("duplicates hit (share of duplicate pairs)")
    ax.set_ylabel("served hits that are right")
    ax.set_title("QQP test split: served-right vs duplicate hit rate")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--quick", action="store_true", help="a 600-pair sample and a short speed run")
    parser.add_argument("--split", default="test", help="test (reported); calibrate to tune the gate")
    parser.add_argument("--embeddings-cache", type=Path, default=None, help="for the offline curve only")
    parser.add_argument("--out", type=Path, default=RESULTS / "cache_hit_rate.json")
    args = parser.parse_args(argv)
    pairs = load_split(args.split, args.data)
    if args.quick:
        pairs = random.Random(3).sample(pairs, 600)
    sim = simulate(pairs, args.embeddings_cache)
    static_t = sim["static_pool_90"]["threshold"]
    real = asyncio.run(through_cache(pairs, static_t, 200 if args.quick else 600))
    deja, static = real["deja_default"], real["static_cosine"]
    result = {
        "split": f"{args.split} ({len(pairs)} pairs, {sum(p.label for p in pairs)} duplicates)",
        "quick": args.quick,
        "static_threshold_90": static_t,
        "through_cache": real,
        "hit_ratio_vs_static": round(deja["right"] / max(1, static["right"]), 2),
        "simulated": {k: v for k, v in sim.items() if k != "curve"},
        "curve": sim["curve"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(sim, real, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
