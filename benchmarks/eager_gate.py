"""Where a request alone should start the transformer early: gate similarity of semantic hits and of wasted runs.

    .venv/bin/python -m benchmarks.eager_gate [--quick] [--data ../shared/data/qqp-dev.jsonl]

deja's default cache, in process, holding the first questions of 600 Quora duplicate pairs and ``benchmarks.peers``'
spliced fillers up to 100,000 entries (10,000 with ``--quick``). Asked: 1,500 unique questions (mostly misses)
and each pair's second question with two surface variants. For every lookup, the gate's best similarity and the
stage that ended it. A request alone starts its transformer run before the verifier's precheck when that best
similarity reaches ``cache.semantic.EAGER_GATE_SIMILARITY``; the run is wasted when the precheck then ends the
lookup (stage "verifier"). Reported per threshold: the semantic hits that still start early, and the wasted runs.
Writes ``benchmarks/results/eager_gate.json`` and ``.png``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from benchmarks.lookup_stages import ANSWER, _request
from benchmarks.peers import PAIRS_PER_PHASE, fill_sources, load_data, spliced, surface_variants
from benchmarks.qqp import results_parser, write_results

THRESHOLDS = (0.85, 0.87, 0.88, 0.90, 0.92, 0.94, 0.96)
STORED_PAIRS = 600


async def main_async(args: Any) -> dict[str, Any]:
    from cache.embedder import create_embedder
    from cache.factory import build_cache
    from cache.semantic import EAGER_GATE_SIMILARITY

    questions, pairs = load_data(args.data, PAIRS_PER_PHASE)
    stored = pairs[0][:STORED_PAIRS]
    fill_to = 10_000 if args.quick else 100_000
    embedder = await create_embedder()
    cache = await build_cache(embedder=embedder)
    await cache.start()
    lookups: list[tuple[str, str | None, float | None]] = []  # (kind, stage, best gate similarity)
    try:
        for first, _ in stored:
            await cache.store(*_request(first), ANSWER)
        used = {t for phase in pairs for pair in phase for t in pair}
        for text in spliced(fill_sources(args.data, used), fill_to - len(stored)):
            await cache.store(*_request(text), ANSWER)
        asked = questions.take(300 if args.quick else 1500)
        asked += [v for _, second in stored for v in [second] + surface_variants(second)[:2]]
        for text in asked:
            result = await cache.lookup(*_request(text))
            lookups.append((result.kind, result.stage, result.gate_similarity))
    finally:
        await cache.close()
        await embedder.close()
    hits = [g for kind, _, g in lookups if kind == "semantic"]
    wasted = [g for kind, stage, g in lookups if stage == "verifier"]
    rows = [{"threshold": t, "hits_early": sum(1 for g in hits if g is not None and g >= t),
             "wasted_runs": sum(1 for g in wasted if g is not None and g >= t)} for t in THRESHOLDS]
    return {"benchmark": "eager_gate", "quick": args.quick, "entries": fill_to, "lookups": len(lookups),
            "semantic_hits": len(hits), "precheck_refused": len(wasted), "chosen": EAGER_GATE_SIMILARITY,
            "thresholds": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["thresholds"]
    xs = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, [r["hits_early"] / max(1, result["semantic_hits"]) for r in rows], "o-",
            label="semantic hits started early")
    ax.plot(xs, [r["wasted_runs"] / max(1, result["precheck_refused"]) for r in rows], "o-",
            label="runs the precheck wastes")
    ax.axvline(result["chosen"], color="#999999", linestyle="--", label=f"chosen {result['chosen']}")
    ax.set_xlabel("gate similarity needed to start the transformer early")
    ax.set_ylabel("share")
    ax.set_title(f"{result['entries']:,} entries, {result['lookups']:,} lookups")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = results_parser(__doc__ or "", "eager_gate", "10,000 entries, 300 unique questions").parse_args()
    write_results(args.out, asyncio.run(main_async(args)), plot)


if __name__ == "__main__":
    main()
