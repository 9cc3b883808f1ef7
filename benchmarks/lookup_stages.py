"""Which stage ends a miss, with a near-empty cache and with 100,000 entries: the semantic cache alone, in process.

    .venv/bin/python -m benchmarks.lookup_stages [--quick] [--data ../shared/data/qqp-dev.jsonl]

The cache is deja's default (``cache.build_cache`` with the default embedder: memory store, gate, verifier,
capacity 100,000). The questions and the fillers are those of ``benchmarks.peers``: unique Quora questions (one
per pair) asked once each, and 99,000 fillers spliced from halves of other real questions. Each question is
looked up and then stored with the lookup's vectors, as the router does on a miss. Reported per phase: how many
lookups each stage decided ("gate": no stored question close enough; "verifier": refused before the transformer
at any cosine; "transformer"), the lookup + store p50, and CPU ms per question (the process's, transformer threads
included). Writes ``benchmarks/results/lookup_stages.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import PAIRS_PER_PHASE, fill_sources, load_data, spliced
from benchmarks.qqp import results_parser, write_results

ANSWER = {"id": "chatcmpl-bench", "object": "chat.completion", "model": "bench",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "An answer. " * 20},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52}}


def _request(text: str) -> tuple[Any, dict[str, Any], str | None]:
    from cache.scope import build_scope

    body = {"model": "bench", "messages": [{"role": "user", "content": text}]}
    scope, query = build_scope(body, tenant="t", namespace="n")
    return scope, body, query


async def _ask_and_store(cache: Any, texts: list[str]) -> dict[str, Any]:
    stages: dict[str, int] = {}
    took: list[float] = []
    cpu = time.process_time()
    for text in texts:
        scope, body, query = _request(text)
        started = time.perf_counter()
        result = await cache.lookup(scope, body, query, reserve=True)
        await cache.store(scope, body, query, ANSWER, lookup=result)
        took.append(time.perf_counter() - started)
        stages[str(result.stage)] = stages.get(str(result.stage), 0) + 1
    semantic = sum(n for stage, n in stages.items() if stage in ("gate", "verifier", "transformer"))
    return {"questions": len(texts), "stages": stages,
            "past_gate": round((semantic - stages.get("gate", 0)) / max(1, semantic), 4),
            "reach_transformer": round(stages.get("transformer", 0) / max(1, semantic), 4),
            "p50_ms": round(float(np.percentile(took, 50)) * 1000, 3),
            "cpu_ms_per_question": round((time.process_time() - cpu) / len(texts) * 1000, 3)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from cache.embedder import create_embedder
    from cache.factory import build_cache

    questions, pairs = load_data(args.data, PAIRS_PER_PHASE)
    n = 100 if args.quick else 400
    fill_to = 10_000 if args.quick else 100_000
    embedder = await create_embedder()
    cache = await build_cache(embedder=embedder)
    await cache.start()
    try:
        out: dict[str, Any] = {"benchmark": "lookup_stages", "quick": args.quick,
                               "config": "default cache (build_cache: memory, gate, verifier, capacity 100,000)"}
        out["empty"] = await _ask_and_store(cache, questions.take(n))
        hit_phase_texts = {t for phase_pairs in pairs for pair in phase_pairs for t in pair}
        for text in spliced(fill_sources(args.data, hit_phase_texts), fill_to - n):
            scope, body, query = _request(text)
            await cache.store(scope, body, query, ANSWER)
        out["full"] = {"entries": (await cache.stats()).entries, **await _ask_and_store(cache, questions.take(n))}
        return out
    finally:
        await cache.close()
        await embedder.close()


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [("empty", "near-empty"), ("full", f"{result['full']['entries']:,} entries")]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    left = [0.0, 0.0]
    for stage, colour in (("gate", "#4c72b0"), ("verifier", "#dd8452"), ("transformer", "#c44e52")):
        shares = [result[p]["stages"].get(stage, 0) / result[p]["questions"] for p, _ in phases]
        ax.barh([label for _, label in phases], shares, left=left, color=colour, label=f"ended by {stage}")
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlabel("share of unique questions (misses)")
    ax.set_title("deja default cache: which stage ends a lookup")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = results_parser(__doc__ or "", "lookup_stages", "10,000 entries, 100 questions per phase").parse_args()
    write_results(args.out, asyncio.run(main_async(args)), plot)


if __name__ == "__main__":
    main()
