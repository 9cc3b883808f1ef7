"""How long one insert can hold the event loop in a full cache: the HNSW scope under eviction churn, in process.

    .venv/bin/python -m benchmarks.index_churn [--quick] [--data ../shared/data/qqp-dev.jsonl]

A scope of the default cache's gate index (``cache.ann.AnnScope``: usearch, int8, the gate's 256-dimension static
vectors of real-looking questions, spliced as in ``benchmarks.peers``) is filled to 100,000 rows, then takes
inserts that each evict the oldest row, as a full cache does, until its graph has been rebuilt (dead rows as many
as live ones) and the rebuild has finished. usearch holds the GIL while it inserts, and the index runs on the event
loop, so the longest insert is how long every other request waits. Two ways, in the same run:

- ``gradual`` (deja's): the new graph is filled ``MOVE_PER_ADD`` rows per insert, searching the old one meanwhile;
- ``at_once``: the whole graph rebuilt inside one insert (the previous behaviour, and any "rebuild on a
  threshold" design).

Reported per way: insert p50 / mean / p99 / max (ms), the search p50 / max during the churn, the rows of the largest
graph, and how much the process's resident memory grew from the end of the fill to its peak during the churn (the
kernel's peak mark, ``VmHWM``, reset after the fill; the graph keeps evicted rows until it is replaced, and the old
and new graphs live side by side while rows move; the ``at_once`` way runs second, in memory the first one may
have left behind).
Writes ``benchmarks/results/index_churn.json`` and ``.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import fill_sources, spliced
from benchmarks.procs import memory_kib
from benchmarks.qqp import results_parser


def _vectors(data: Path, n: int) -> np.ndarray:
    from cache.gate import StaticEmbedder

    gate = StaticEmbedder.load()
    return np.stack([gate.embed(text) for text in spliced(fill_sources(data), n)]).astype(np.float32)


@contextlib.contextmanager
def ann_settings(**values: int) -> Iterator[None]:
    """Within: ``cache.ann``'s module settings (``move_per_add=4`` sets ``MOVE_PER_ADD``...) take these values;
    restored after."""
    from cache import ann

    names = {name.upper(): value for name, value in values.items()}
    saved = {name: getattr(ann, name) for name in names}
    for name, value in names.items():
        setattr(ann, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ann, name, value)


def churn(vectors: np.ndarray, capacity: int, move_per_add: int) -> dict[str, Any]:
    from cache import ann

    with ann_settings(move_per_add=move_per_add):
        return _churn(ann.AnnScope(vectors.shape[1], "i8"), vectors, capacity, move_per_add)


def _resident_mib(field: str = "VmRSS") -> float:
    return memory_kib(os.getpid(), field) / 1024


def _reset_peak() -> bool:
    """Start the kernel's peak-RSS mark (``VmHWM``) afresh from now; False where that is not possible (then the
    growth is not reported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _churn(scope: Any, vectors: np.ndarray, capacity: int, move_per_add: int) -> dict[str, Any]:
    for i in range(capacity):
        scope.add(f"e{i}", vectors[i % len(vectors)], 1e12)
    after_fill = _resident_mib()
    peak_marked = _reset_peak()  # the kernel's mark sees the peak inside a single insert (``at_once``) too
    inserts: list[float] = []
    searches: list[float] = []
    largest, rebuilt, i = 0, False, capacity
    while not rebuilt or scope.building:
        started = time.perf_counter()
        scope.add(f"e{i}", vectors[i % len(vectors)], 1e12)
        scope.remove(f"e{i - capacity}")
        inserts.append(time.perf_counter() - started)
        rebuilt = rebuilt or scope.building
        largest = max(largest, len(scope._index))
        if i % 50 == 0:
            started = time.perf_counter()
            scope.search(vectors[(i * 7919) % len(vectors)], 5)
            searches.append(time.perf_counter() - started)
        i += 1
    growth = round(_resident_mib("VmHWM") - after_fill, 1) if peak_marked else None
    ms = np.array(inserts) * 1000
    return {"move_per_add": move_per_add, "inserts": len(inserts),
            "insert_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "insert_mean_ms": round(float(ms.mean()), 3),
            "insert_p99_ms": round(float(np.percentile(ms, 99)), 3), "insert_max_ms": round(float(ms.max()), 1),
            "inserts_over_50ms": int((ms > 50).sum()),
            "search_p50_ms": round(float(np.percentile(searches, 50)) * 1000, 3),
            "search_max_ms": round(float(np.max(searches)) * 1000, 1), "largest_graph_rows": largest,
            "rss_after_fill_mib": round(after_fill, 1), "rss_growth_during_churn_mib": growth}


def main() -> None:
    args = results_parser(__doc__ or "", "index_churn", "10,000 rows").parse_args()
    from cache import ann

    capacity = 10_000 if args.quick else 100_000
    vectors = _vectors(args.data, capacity + capacity // 2)
    result = {"benchmark": "index_churn", "quick": args.quick, "rows": capacity, "dim": int(vectors.shape[1]),
              "gradual": churn(vectors, capacity, ann.MOVE_PER_ADD),
              "at_once": churn(vectors, capacity, 10**9)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=1))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ways = ["gradual", "at_once"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for offset, (metric, label) in enumerate((("insert_p99_ms", "p99"), ("insert_max_ms", "max"))):
        ax.bar([x + 0.4 * offset for x in range(len(ways))], [result[w][metric] for w in ways], width=0.4,
               label=f"insert {label}")
    ax.set_yscale("log")
    ax.set_xticks([x + 0.2 for x in range(len(ways))], ways)
    ax.set_ylabel("ms the event loop is held (log)")
    ax.set_title(f"one insert into a full {result['rows']:,}-row HNSW scope under eviction churn")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
