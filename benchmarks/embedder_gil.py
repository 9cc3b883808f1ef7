"""The transformer beside a busy event loop: how much of the embedder a semantic hit gets under load.

    .venv/bin/python -m benchmarks.embedder_gil [--quick] [--data ../shared/data/qqp-dev.jsonl]

deja's embedder encodes in one worker thread (``cache.embedder.MicroBatchEmbedder``). ONNX Runtime lets go of the
GIL while it computes, but the worker needs the GIL back after every call, and to tokenise; while another thread
runs Python, CPython hands the GIL over only every ``sys.getswitchinterval()`` (5 ms by default). Under load the
event loop's thread runs Python most of the time. Measured here, in rounds that interleave the cases (medians):

* texts/s of the default embedder's encode (ONNX int8, one real question per call, as the worker runs it) in a
  thread of its own, alone;
* the same while the main thread runs pure Python (standing for a busy event loop), at the default switch interval
  and at 0.5 ms;
* the share of its solo work the Python thread kept meanwhile.

Writes ``benchmarks/results/embedder_gil.json`` and ``.png``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.qqp import load_pairs, results_parser

DEFAULT_SWITCH = 0.005
#: (name, main thread busy with Python, switch interval in seconds)
CASES: tuple[tuple[str, bool, float], ...] = (
    ("alone", False, DEFAULT_SWITCH),
    ("beside busy Python, switch 5 ms", True, DEFAULT_SWITCH),
    ("beside busy Python, switch 0.5 ms", True, 0.0005),
)


def spin(seconds: float) -> int:
    """Pure Python for ``seconds``: how many loop turns it managed."""
    turns, until = 0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        turns += 1
    return turns


def encoder_rate(encode: Callable[[list[str]], Any], texts: list[str], seconds: float, busy: bool,
                 switch: float) -> tuple[float, int]:
    """(texts/s ``encode`` managed in its own thread, one text per call; the main thread's ``spin`` turns meanwhile,
    0 when it was not ``busy``), with the switch interval set to ``switch`` for the run and restored after."""
    previous = sys.getswitchinterval()
    stop, done = threading.Event(), [0]

    def worker() -> None:
        count = 0
        while not stop.is_set():
            encode([texts[count % len(texts)]])
            count += 1
        done[0] = count

    sys.setswitchinterval(switch)
    try:
        thread = threading.Thread(target=worker, name="encoder")
        started = time.perf_counter()
        thread.start()
        if busy:
            turns = spin(seconds)
        else:
            time.sleep(seconds)
            turns = 0
        stop.set()
        thread.join()
        elapsed = time.perf_counter() - started
    finally:
        sys.setswitchinterval(previous)
    return done[0] / elapsed, turns


def run(encode: Callable[[list[str]], Any], texts: list[str], seconds: float, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    kept: dict[str, list[float]] = {name: [] for name, busy, _ in CASES if busy}
    for index in range(rounds):
        solo = spin(seconds)
        for name, busy, switch in CASES:
            rate, turns = encoder_rate(encode, texts, seconds, busy, switch)
            rates[name].append(rate)
            if busy:
                kept[name].append(turns / solo)
        print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rates.items()),
              file=sys.stderr, flush=True)
    return {
        "texts_per_s": {name: round(statistics.median(values), 1) for name, values in rates.items()},
        "python_work_kept": {name: round(statistics.median(values), 2) for name, values in kept.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["texts_per_s"])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = ax.bar(range(len(names)), [result["texts_per_s"][n] for n in names], color=["#4c72b0", "#c44e52", "#dd8452"])
    labels = [f"{result['texts_per_s'][n]:.0f}/s" + (f"\nPython kept {result['python_work_kept'][n]:.0%}"
                                                      if n in result["python_work_kept"] else "") for n in names]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("texts encoded per second (one per call)")
    ax.set_title(f"deja's embedder (ONNX int8) in its worker thread, {os.cpu_count()} shared cores, "
                 f"median of {result['rounds']} rounds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = results_parser(__doc__ or "", "embedder_gil", "one round of 1 s per case").parse_args()
    from cache.onnx_embedder import OnnxEmbedder

    embedder = OnnxEmbedder(precision="int8", threads=1)  # deja's default embedder
    texts = sorted({p.text_a for p in load_pairs(args.data)})[:2000]
    embedder._encode(texts[:20])  # warm up
    seconds, rounds = (1.0, 1) if args.quick else (2.0, 5)
    result: dict[str, Any] = {"benchmark": "embedder_gil", "quick": args.quick, "rounds": rounds,
                              "seconds_per_case": seconds, "embedder": "OnnxEmbedder(int8, 1 thread)",
                              "machine": {"cpus": os.cpu_count()}, **run(embedder._encode, texts, seconds, rounds)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
