"""How fast ``deja cache replay`` goes: 100,000 logged requests made from the Quora dev pairs, end to end.

    .venv/bin/python -m benchmarks.replay_speed [--quick] [--requests 100000] [--data ../shared/data/qqp-dev.jsonl]

The requests are written as a JSONL file by ``benchmarks.make_replay_file`` (pairs asked hours apart, 60%
verbatim and 40% casually retyped re-asks, labels from QQP's duplicate clusters), then replayed by the same
code as the CLI (``read_jsonl`` → ``run_replay`` with deja's default embedder and the shipped verifier) over 40
settings (0.80..0.99 with and without the verifier). Records each phase's seconds, the machine's load, and what
the replay found. Writes ``benchmarks/results/replay_speed.json``, ``.png`` (phases) and ``replay_qqp.html``
(the report itself). The budget is 5 minutes for 100,000 requests on the 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.qqp import DEFAULT_QQP, describe_embedder

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_S = 300.0


class PhaseClock:
    """A progress callback that remembers when each phase ended (and prints the bar)."""

    def __init__(self) -> None:
        from cache.replay import ProgressBar

        self.bar = ProgressBar()
        self.ended: dict[str, float] = {}
        self.started = time.perf_counter()

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.bar(phase, done, total)
        if done >= total:
            self.ended[phase] = time.perf_counter() - self.started


async def measure(path: Path, threads: int | None) -> dict[str, Any]:
    from cache.embedder import create_embedder
    from cache.replay import ReplayOptions, read_jsonl, run_replay, write_html
    from cache.verify import Verifier

    clock = PhaseClock()
    requests, read = read_jsonl(path)
    read_s = time.perf_counter() - clock.started
    embedder = await create_embedder(threads=threads)
    load_s = time.perf_counter() - clock.started - read_s
    try:
        report = await run_replay(requests, embedder, Verifier.load_default(), read=read, progress=clock,
                                  options=ReplayOptions(source={"name": "QQP dev, 100k replay", "kind": "jsonl"}))
    finally:
        await embedder.close()
    total = time.perf_counter() - clock.started
    write_html(report, RESULTS / "replay_qqp.html")
    phases = {"read": read_s, "load_embedder": load_s}
    last = read_s + load_s
    for phase in ("keys", "embed", "neighbours", "sweep"):
        if phase in clock.ended:
            end = clock.ended[phase]
            phases[phase] = end - last
            last = end
    phases["price_and_report"] = total - last
    return {"report": report, "phases": {k: round(v, 2) for k, v in phases.items()}, "total_s": round(total, 2),
            "embedder": describe_embedder(embedder)}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    live = next(r for r in report["rows"] if r["verifier"] and r["threshold"] == report["default"]["threshold"])
    keep = ("hit_rate", "exact", "semantic", "wrong_rate", "tokens_saved", "usd_saved", "latency_saved_s")
    return {"requests": report["requests"], "distinct": report["distinct_requests"],
            "embedded": report["embedded_texts"], "verifier_checks": report["verifier_checks"],
            "settings": len(report["rows"]), "live": {k: live[k] for k in keep},
            "recommended_at_2pct": report["recommended"], "usd_total": round(report["costs"]["usd_total"], 2)}


def plot(phases: dict[str, float], total: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(phases)
    ax.barh(names, [phases[n] for n in names], color="#1f6feb")
    ax.axvline(BUDGET_S, color="#b3261e", ls="--", lw=1, label=f"budget {BUDGET_S:.0f} s")
    ax.set_xlabel("seconds")
    ax.set_title(f"cache replay: {total:.0f} s end to end")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 requests")
    parser.add_argument("--threads", type=int, default=None,
                        help="embedder threads (default: as `deja cache replay`, one per core up to 4)")
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_speed.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 10_000
    if args.threads is None:
        from router.cli.replay import batch_threads

        args.threads = batch_threads()
    from benchmarks import make_replay_file

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay.jsonl"
        make_replay_file.main(["--data", str(args.data), "--requests", str(args.requests), "--out", str(path)])
        measured = asyncio.run(measure(path, args.threads))
    result = {
        "requests": args.requests,
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_before_after": [round(load_before, 2),
                                                                        round(os.getloadavg()[0], 2)]},
        "embedder": measured["embedder"], "embedder_threads": args.threads,
        "total_s": measured["total_s"], "budget_s": BUDGET_S, "within_budget": measured["total_s"] <= BUDGET_S,
        "requests_per_s": round(args.requests / measured["total_s"], 1),
        "phases_s": measured["phases"],
        "found": summary(measured["report"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(measured["phases"], measured["total_s"], args.out.with_suffix(".png"))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
