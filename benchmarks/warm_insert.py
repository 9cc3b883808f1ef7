"""What an HNSW insert costs right after its own search, and once other work has pushed the graph out of the caches.

    .venv/bin/python -m benchmarks.warm_insert [--quick] [--data ../shared/data/qqp-dev.jsonl]

Why deja inserts a miss's row at lookup while other requests are in flight (``cache.ann.AnnScope.reserve``): in
the server, the insert after the answer comes once other requests' work has passed through the CPU's caches. On
``benchmarks.gate_recall``'s rows (99,600 stored gate vectors in deja's ``AnnScope``), each of the 600 questions is
searched (top 5) and then inserted; before each search, and for every other question also between its search and
its insert, 64 MiB of unrelated memory is read and written (more than this machine's 32 MiB L3), as a busy server
would. Reported: search and insert times, p50 and mean, for the two orders. Writes
``benchmarks/results/warm_insert.json`` and ``.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gate_recall import gate_rows
from benchmarks.qqp import results_parser, write_results

FLUSH_BYTES = 64 * 2**20


def run(data: Path, quick: bool) -> dict[str, Any]:
    from cache.ann import AnnScope

    stored, queries, _, _ = gate_rows(data, quick)
    scope = AnnScope(stored.shape[1], "i8")
    for row in range(len(stored)):
        scope.add(str(row), stored[row], float("inf"))
    other = np.ones(FLUSH_BYTES // 8)

    def flush() -> None:
        other.sum()
        other[::8] += 1.0

    took: dict[str, list[float]] = {"search": [], "warm_insert": [], "cold_insert": []}
    for q in range(len(queries)):
        cold = q % 2 == 0
        flush()
        started = time.perf_counter()
        scope.search(queries[q], 5)
        took["search"].append(time.perf_counter() - started)
        if cold:
            flush()
        started = time.perf_counter()
        scope.add(f"q{q}", queries[q], float("inf"))
        took["cold_insert" if cold else "warm_insert"].append(time.perf_counter() - started)
    return {"benchmark": "warm_insert", "quick": quick, "stored": len(stored), "questions": len(queries),
            "flush_mib": FLUSH_BYTES // 2**20,
            **{name: {"p50_ms": round(float(np.median(v)) * 1000, 3), "mean_ms": round(float(np.mean(v)) * 1000, 3)}
               for name, v in took.items()}}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["search", "warm_insert", "cold_insert"]
    labels = ["search", "insert right after it", "insert after other work"]
    values = [result[n]["p50_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.barh(labels, values, color=["#999999", "#4c72b0", "#c44e52"])
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f} ms", va="center", fontsize=8)
    ax.set_xlabel("p50 (ms)")
    ax.set_title(f"HNSW insert at {result['stored']:,} rows, warm and cold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = results_parser(__doc__ or "", "warm_insert", "9,000 fillers").parse_args()
    write_results(args.out, run(args.data, args.quick), plot)


if __name__ == "__main__":
    main()
