"""Tried and not kept: an inverted-file index (k-means lists scanned with numpy) in place of the gate's HNSW graph.

    .venv/bin/python -m benchmarks.ivf_trial [--quick] [--data ../shared/data/qqp-dev.jsonl]

On ``benchmarks.gate_recall``'s rows (99,600 stored gate vectors, 600 questions; 299 whose partner is the
brute-force nearest at the gate's threshold), each variant groups the rows into ``lists`` k-means lists (8
iterations on a sample of 30 rows per list) over the vectors' first ``dims`` dimensions, or a ``dims``-dimension
principal basis of 4,000 rows; a search scores the centroids, scans the ``probe`` nearest lists exactly, and re-ranks
its best 16 on the full int8 vector. Counted as in ``gate_recall``: questions whose partner comes first. Timed:
each search with 64 MiB of unrelated memory read and written before it (cold, as in a busy server) and again right
after (warm). Compare with ``gate_recall``'s graph in the same run of that benchmark. Writes
``benchmarks/results/ivf_trial.json`` and ``.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gate_recall import gate_rows
from benchmarks.qqp import results_parser, write_results

#: (dims, lists, probe, principal basis)
VARIANTS = [(64, 256, 8, False), (64, 256, 12, False), (64, 256, 8, True), (96, 256, 8, False),
            (64, 512, 16, False), (256, 256, 8, False)]
RERANK = 16


def _kmeans(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iterations):
        nearest = (x @ centroids.T).argmax(axis=1)
        for j in range(k):
            members = x[nearest == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-9
    return centroids.astype(np.float32)


class _Lists:
    def __init__(self, stored: np.ndarray, reduce: Any, lists: int) -> None:
        rng = np.random.default_rng(0)
        reduced = reduce(stored)
        sample = reduced[rng.choice(len(reduced), min(len(reduced), 30 * lists), replace=False)]
        self.centroids = _kmeans(sample, lists, 8, rng)
        owner = (reduced @ self.centroids.T).argmax(axis=1)
        self.order = np.argsort(owner, kind="stable")
        self.rows = np.ascontiguousarray(reduced[self.order])
        self.offsets = np.searchsorted(owner[self.order], np.arange(lists + 1))
        self.full = np.clip(np.round(stored * 127), -127, 127).astype(np.int8)
        self.reduce = reduce

    def search(self, query: np.ndarray, probe: int) -> np.ndarray:
        reduced = self.reduce(query)
        nearest = np.argpartition(-(self.centroids @ reduced), probe)[:probe]
        scores, ids = [], []
        for j in nearest:
            start, end = self.offsets[j], self.offsets[j + 1]
            if end > start:
                scores.append(self.rows[start:end] @ reduced)
                ids.append(self.order[start:end])
        score, found = np.concatenate(scores), np.concatenate(ids)
        best = found[np.argpartition(-score, min(RERANK, len(score)) - 1)[:RERANK]]
        exact = self.full[best].astype(np.float32) @ query
        return best[np.argsort(-exact)[:5]]


def run(data: Path, quick: bool) -> dict[str, Any]:
    stored, queries, partners, eligible = gate_rows(data, quick)
    other = np.ones(64 * 2**20 // 8)
    out: dict[str, Any] = {"benchmark": "ivf_trial", "quick": quick, "stored": len(stored),
                           "partner_nearest_by_brute_force": int(eligible.sum()), "variants": []}
    for dims, lists, probe, principal in VARIANTS:
        if principal:
            sample = stored[np.random.default_rng(1).choice(len(stored), 4000, replace=False)]
            basis = np.ascontiguousarray(np.linalg.svd(sample - sample.mean(0), full_matrices=False)[2][:dims].T)

            def reduce(x: np.ndarray, basis: np.ndarray = basis) -> np.ndarray:
                return np.ascontiguousarray(x @ basis)
        else:
            def reduce(x: np.ndarray, dims: int = dims) -> np.ndarray:
                return np.ascontiguousarray(x[..., :dims])
        index = _Lists(stored, reduce, lists)
        first, cold, warm = 0, [], []
        for q in range(len(queries)):
            other.sum()
            other[::8] += 1.0
            started = time.perf_counter()
            found = index.search(queries[q], probe)
            middle = time.perf_counter()
            index.search(queries[q], probe)
            cold.append(middle - started)
            warm.append(time.perf_counter() - middle)
            first += int(bool(eligible[q]) and int(found[0]) == int(partners[q]))
        row = {"dims": dims, "principal_basis": principal, "lists": lists, "probe": probe, "partner_first": first,
               "cold_p50_ms": round(float(np.median(cold)) * 1000, 3),
               "warm_p50_ms": round(float(np.median(warm)) * 1000, 3)}
        out["variants"].append(row)
        print(row, flush=True)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["variants"]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for row in rows:
        label = f"{row['dims']}{'p' if row['principal_basis'] else ''}d/{row['lists']}/{row['probe']}"
        ax.scatter(row["cold_p50_ms"], row["partner_first"], color="#4c72b0")
        ax.annotate(label, (row["cold_p50_ms"], row["partner_first"]), fontsize=7)
    ax.set_xlabel("search p50, cold (ms)")
    ax.set_ylabel(f"partner first (of {result['partner_nearest_by_brute_force']})")
    ax.set_title("inverted-file variants (dims/lists/probe); compare gate_recall's HNSW")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = results_parser(__doc__ or "", "ivf_trial", "9,000 fillers").parse_args()
    write_results(args.out, run(args.data, args.quick), plot)


if __name__ == "__main__":
    main()
