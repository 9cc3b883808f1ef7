"""Does the gate's HNSW graph find a stored near-duplicate at 100,000 entries? deja's own scope, against brute force.

    .venv/bin/python -m benchmarks.gate_recall [--quick] [--data ../shared/data/qqp-dev.jsonl]

The stored rows are those of ``benchmarks.peers``' full phase: its 99,000 fillers spliced from halves of real Quora
questions, plus the ``text_a`` of that phase's 600 duplicate pairs (its misses' unique questions are left out),
inserted one at a time in a shuffled order into :class:`cache.ann.AnnScope` as deja's cache does (int8 gate
vectors, ``cache.ann``'s parameters). Each ``text_b`` is then searched (top 5, as ``SemanticCache`` asks).
Counted: the questions whose partner is the nearest stored row by brute force (exact float cosines) with a static
cosine at or above the gate's threshold, and how many of them the graph returns with the partner first, or
anywhere in its top 5. The same rows in graphs
with other parameters (fewer links, a wider search) are measured in the same run, with the graph's size (as saved)
and the search time. Writes ``benchmarks/results/gate_recall.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.index_churn import ann_settings
from benchmarks.peers import PAIRS_PER_PHASE, fill_sources, load_data, spliced
from benchmarks.qqp import results_parser

VARIANTS: list[tuple[str, dict[str, int]]] = [
    ("deja (cache.ann defaults)", {}),
    ("expansion_search 128", {"expansion_search": 128}),
    ("connectivity 16 (usearch's default)", {"connectivity": 16}),
    ("expansion_search 48", {"expansion_search": 48}),
    ("expansion_search 32", {"expansion_search": 32}),
    ("expansion_add 32", {"expansion_add": 32}),
]


def measure(stored: np.ndarray, queries: np.ndarray, partners: np.ndarray, eligible: np.ndarray,
            params: dict[str, int]) -> dict[str, Any]:
    """``params``: ``cache.ann`` settings other than deja's, by lower-case name (``connectivity``...)."""
    from cache.ann import AnnScope

    with ann_settings(**params):
        return _measure(AnnScope(stored.shape[1], "i8"), stored, queries, partners, eligible)


def _measure(scope: Any, stored: np.ndarray, queries: np.ndarray, partners: np.ndarray,
             eligible: np.ndarray) -> dict[str, Any]:
    order = list(range(len(stored)))
    random.Random(4).shuffle(order)
    started = time.perf_counter()
    for row in order:
        scope.add(str(row), stored[row], float("inf"))
    add_ms = (time.perf_counter() - started) / len(order) * 1000
    first = anywhere = 0
    started = time.perf_counter()
    for q in range(len(queries)):
        found = [int(entry_id) for entry_id, _ in scope.search(queries[q], 5)]
        if eligible[q]:
            first += int(bool(found) and found[0] == int(partners[q]))
            anywhere += int(int(partners[q]) in found)
    search_ms = (time.perf_counter() - started) / len(queries) * 1000
    return {"partner_first": first, "partner_in_top5": anywhere, "add_ms": round(add_ms, 3),
            "search_ms": round(search_ms, 3),
            # the graph's own size (vectors and links) as usearch saves it: its reserved memory
            # (``memory_usage``) counts capacity that was never touched, so never resident
            "graph_mib": round(len(scope._index.save()) / 2**20, 1)}


def gate_rows(data: Path, quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stored gate vectors, query gate vectors, each query's partner row, whether that partner is the query's
    brute-force nearest at or above the gate's threshold): the rows described in the module's docstring."""
    from cache.gate import DEFAULT_GATE_THRESHOLD, StaticEmbedder

    gate = StaticEmbedder.load()
    _, phases = load_data(data, PAIRS_PER_PHASE)
    hit_texts = {t for phase in phases for pair in phase for t in pair}
    fillers = spliced(fill_sources(data, hit_texts), 9_000 if quick else 99_000)
    pairs = phases[1]  # the pairs bench-peers asks once its cache is full
    stored = np.stack([gate.embed(t) for t in fillers + [a for a, _ in pairs]]).astype(np.float32)
    queries = np.stack([gate.embed(b) for _, b in pairs]).astype(np.float32)
    partners = len(fillers) + np.arange(len(pairs))
    cosines = queries @ stored.T
    eligible = (cosines.argmax(axis=1) == partners) & (cosines[np.arange(len(pairs)), partners]
                                                      >= DEFAULT_GATE_THRESHOLD)
    return stored, queries, partners, eligible


def run(data: Path, quick: bool) -> dict[str, Any]:
    from cache.gate import DEFAULT_GATE_THRESHOLD

    stored, queries, partners, eligible = gate_rows(data, quick)
    out: dict[str, Any] = {"benchmark": "gate_recall", "quick": quick, "stored": len(stored),
                           "questions": len(queries), "partner_nearest_by_brute_force": int(eligible.sum()),
                           "gate_threshold": DEFAULT_GATE_THRESHOLD, "graphs": {}}
    for name, params in VARIANTS:
        out["graphs"][name] = {"params": params, **measure(stored, queries, partners, eligible, params)}
        print(name, out["graphs"][name], flush=True)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["graphs"])
    total = result["partner_nearest_by_brute_force"]
    shares = [result["graphs"][n]["partner_first"] / max(1, total) for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names, shares, color="#4c72b0")
    for i, n in enumerate(names):
        g = result["graphs"][n]
        ax.text(shares[i], i, f" {shares[i]:.1%}, {g['graph_mib']} MiB, {g['search_ms']} ms", va="center", fontsize=8)
    ax.set_xlim(0.8, 1.05)
    ax.set_xlabel(f"share of {total} questions whose partner is the brute-force nearest, found first by the graph")
    ax.set_title(f"gate HNSW recall at {result['stored']:,} stored questions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser: argparse.ArgumentParser = results_parser(__doc__ or "", "gate_recall", "9,000 fillers")
    args = parser.parse_args()
    result = run(args.data, args.quick)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
