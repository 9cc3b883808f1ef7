"""Embedder speed: torch vs ONNX Runtime fp32 vs ONNX Runtime int8, alone and through the real cache.

    .venv/bin/python -m benchmarks.embedder_speed [--quick] [--data ../shared/data/qqp-dev.jsonl]

Per backend (interleaved in every round, since the shared machine is noisy; medians over rounds):

* embedder alone: texts/s and p50 call latency at concurrency 1 and 32 (one ``embed([text])`` per call,
  fresh embedder so the LRU never helps);
* through ``SemanticCache`` + ``MemoryStore`` + the default verifier: seeded with QQP ``text_a`` (3000),
  then fresh ``text_b`` looked up (600) at concurrency 1 and 32: lookups/s, p50 latency, p50 of the
  semantic hits at concurrency 1, the hit kinds and the share of served hits that are right;
* accuracy against torch: per-sentence cosine (200 sentences) and the Spearman correlation of 500 pairs'
  cosines.

Writes ``benchmarks/results/embedder_speed.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.qqp import DEFAULT_QQP, Pair, load_pairs
from cache.embedder import Embedder, SentenceTransformerEmbedder
from cache.onnx_embedder import OnnxEmbedder
from cache.scope import build_scope
from cache.semantic import DEFAULT_MIN_SIMILARITY, SemanticCache
from cache.store import MemoryStore
from cache.verify import Verifier, VerifierError

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_LOOKUPS = 300.0
Factory = Callable[[], Awaitable[Embedder]]
BACKENDS: dict[str, Factory] = {
    "torch": lambda: SentenceTransformerEmbedder.create(threads=1),
    "onnx-fp32": lambda: OnnxEmbedder.create(precision="fp32", threads=1),
    "onnx-int8": lambda: OnnxEmbedder.create(precision="int8", threads=1),
    "onnx-int8-2threads": lambda: OnnxEmbedder.create(precision="int8", threads=2),
}


def _body(text: str) -> dict[str, Any]:
    return {"model": "bench-model", "messages": [{"role": "user", "content": text}], "temperature": 0}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def workload(pairs: list[Pair], seeds: int, queries: int) -> tuple[list[str], list[Pair]]:
    """``seeds`` distinct text_a, and ``queries`` pairs whose text_b is new (their text_a is seeded)."""
    rng = random.Random(3)
    shuffled = rng.sample(pairs, len(pairs))
    seeded: dict[str, None] = {}
    for pair in shuffled:
        if len(seeded) >= seeds:
            break
        seeded.setdefault(pair.text_a)
    chosen: list[Pair] = []
    seen: set[str] = set()
    for pair in shuffled:
        if len(chosen) >= queries:
            break
        if pair.text_a in seeded and pair.text_b not in seeded and pair.text_b not in seen:
            seen.add(pair.text_b)
            chosen.append(pair)
    return list(seeded), chosen


async def _concurrently(items: list[Any], concurrency: int, call: Callable[[Any], Awaitable[None]]) -> float:
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await call(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(items) / (time.perf_counter() - started)


async def embedder_alone(factory: Factory, texts: list[str], concurrency: int) -> dict[str, float]:
    embedder = await factory()
    latencies: list[float] = []

    async def call(text: str) -> None:
        started = time.perf_counter()
        await embedder.embed([text])
        latencies.append(time.perf_counter() - started)

    try:
        rate = await _concurrently(texts, concurrency, call)
    finally:
        await embedder.close()
    return {"texts_per_s": rate, "p50_ms": 1000 * statistics.median(latencies)}


async def seeded_store(factory: Factory, seeds: list[str]) -> MemoryStore:
    """A store holding every seed, embedded by this backend (batched first, so ``store()`` hits the LRU)."""
    embedder = await factory()
    store = MemoryStore()
    cache = SemanticCache(store, embedder, None)
    await cache.start()
    try:
        for i in range(0, len(seeds), 64):
            await embedder.embed(seeds[i : i + 64])
        for text in seeds:
            scope, query = build_scope(_body(text), tenant="bench", namespace="qqp")
            await cache.store(scope, _body(text), query, {"answer": text})
    finally:
        await embedder.close()
    return store


async def through_cache(
    factory: Factory, store: MemoryStore, verifier: Verifier | None, queries: list[Pair], concurrency: int
) -> dict[str, Any]:
    embedder = await factory()  # cold LRU
    cache = SemanticCache(store, embedder, verifier)
    kinds = {"exact": 0, "semantic": 0, "miss": 0}
    latencies: list[float] = []
    semantic: list[float] = []
    right = served = 0

    async def call(pair: Pair) -> None:
        nonlocal right, served
        scope, query = build_scope(_body(pair.text_b), tenant="bench", namespace="qqp")
        started = time.perf_counter()
        result = await cache.lookup(scope, _body(pair.text_b), query)
        latencies.append(time.perf_counter() - started)
        kinds[result.kind] += 1
        if result.kind == "semantic":
            semantic.append(latencies[-1])
        if result.entry is not None and result.entry.query is not None:
            served += 1
            stored = result.entry.query
            right += (stored == pair.text_a and pair.label == 1) or _norm(stored) == _norm(pair.text_b)

    try:
        rate = await _concurrently(queries, concurrency, call)
    finally:
        await embedder.close()
    return {
        "lookups_per_s": rate,
        "p50_ms": 1000 * statistics.median(latencies),
        "semantic_hit_p50_ms": 1000 * statistics.median(semantic) if semantic else None,
        "kinds": kinds,
        "served": served,
        "served_right": round(right / served, 4) if served else None,
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v: np.ndarray) -> np.ndarray:
        out = np.empty(len(v))
        out[np.argsort(v, kind="stable")] = np.arange(len(v))
        return out

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


async def accuracy(pairs: list[Pair], sentences: int) -> dict[str, Any]:
    """Each ONNX precision against torch: per-sentence cosine, and the ranking of pair similarities."""
    a, b = [p.text_a for p in pairs], [p.text_b for p in pairs]
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("torch", "onnx-fp32", "onnx-int8"):
        embedder = await BACKENDS[name]()
        try:
            vectors[name] = (await embedder.embed(a), await embedder.embed(b))
        finally:
            await embedder.close()
    ref_a, ref_b = vectors["torch"]
    ref_pairs = (ref_a * ref_b).sum(axis=1)
    out: dict[str, Any] = {"sentences": sentences, "pairs": len(pairs)}
    for name in ("onnx-fp32", "onnx-int8"):
        va, vb = vectors[name]
        cos = (va[:sentences] * ref_a[:sentences]).sum(axis=1)
        pair_cos = (va * vb).sum(axis=1)
        out[name] = {
            "min_cosine_to_torch": round(float(cos.min()), 5),
            "mean_cosine_to_torch": round(float(cos.mean()), 5),
            "pair_cosine_spearman": round(_spearman(ref_pairs, pair_cos), 5),
            "pair_cosine_max_abs_diff": round(float(np.abs(ref_pairs - pair_cos).max()), 4),
        }
    return out


def _verifier() -> tuple[Verifier | None, str]:
    """deja's default verifier; without it (say, its parameter file is being refitted) the floor alone decides."""
    try:
        return Verifier.load_default(), "default"
    except VerifierError as exc:
        print(f"verifier unavailable, cosine floor only: {exc}", file=sys.stderr)
        return None, f"unavailable ({exc}): cosine floor {DEFAULT_MIN_SIMILARITY} only"


def _median_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(rounds[-1])
    for key, value in rounds[0].items():
        if isinstance(value, float):
            merged[key] = round(statistics.median(r[key] for r in rounds), 2)
    return merged


async def run(pairs: list[Pair], seeds: int, queries: int, single: int, rounds: int) -> dict[str, Any]:
    seed_texts, query_pairs = workload(pairs, seeds, queries)
    query_texts = [p.text_b for p in query_pairs]
    verifier, verifier_note = _verifier()
    stores = {name: await seeded_store(factory, seed_texts) for name, factory in BACKENDS.items()}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"c1": [], "c32": []} for name in BACKENDS}
    cached: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"c1": [], "c32": []} for name in BACKENDS}
    for index in range(rounds):
        for name, factory in BACKENDS.items():  # interleaved: every backend sees the same noise
            raw[name]["c1"].append(await embedder_alone(factory, query_texts[:single], 1))
            raw[name]["c32"].append(await embedder_alone(factory, query_texts, 32))
            cached[name]["c1"].append(await through_cache(factory, stores[name], verifier, query_pairs[:single], 1))
            cached[name]["c32"].append(await through_cache(factory, stores[name], verifier, query_pairs, 32))
            print(f"round {index + 1}/{rounds} {name}: cache c32 "
                  f"{cached[name]['c32'][-1]['lookups_per_s']:.1f}/s", file=sys.stderr, flush=True)
    return {
        "seeded": len(seed_texts),
        "queries": len(query_pairs),
        "queries_at_concurrency_1": min(single, len(query_pairs)),
        "rounds": rounds,
        "verifier": verifier_note,
        "embedder": {n: {c: _median_rounds(v) for c, v in runs.items()} for n, runs in raw.items()},
        "cache": {n: {c: _median_rounds(v) for c, v in runs.items()} for n, runs in cached.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["cache"])
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (section, metric, title) in zip(axes, (
        ("embedder", "texts_per_s", "embedder alone: texts/s"),
        ("cache", "lookups_per_s", "SemanticCache+MemoryStore: lookups/s"),
    ), strict=True):
        for offset, conc in ((-0.2, "c1"), (0.2, "c32")):
            values = [result[section][n][conc][metric] for n in names]
            bars = ax.bar(x + offset, values, 0.4, label=f"concurrency {conc[1:]}")
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        if section == "cache":
            ax.axhline(TARGET_LOOKUPS, color="red", ls=":", lw=1, label=f"target {TARGET_LOOKUPS:.0f}/s")
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"all-MiniLM-L6-v2 on {os.cpu_count()} shared CPU cores (median of {result['rounds']} rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--quick", action="store_true", help="1000 seeds, 150 queries, one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "embedder_speed.json")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data)
    seeds, queries, single = (1000, 150, 60) if args.quick else (3000, 600, 150)
    rounds = args.rounds or (1 if args.quick else 3)
    load_before = os.getloadavg()
    sample = random.Random(11).sample(pairs, 200 if args.quick else 500)
    result: dict[str, Any] = {
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "versions": _versions(),
        "accuracy": asyncio.run(accuracy(sample, 200)),
    }
    result.update(asyncio.run(run(pairs, seeds, queries, single, rounds)))
    torch_c32 = result["cache"]["torch"]["c32"]["lookups_per_s"]
    result["cache_c32_speedup_vs_torch"] = {
        n: round(v["c32"]["lookups_per_s"] / torch_c32, 2) for n, v in result["cache"].items()
    }
    result["machine"]["loadavg_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
