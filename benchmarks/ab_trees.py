"""Before/after on one machine: deja from two source trees, both filled, misses measured in alternating rounds.

    git worktree add /tmp/deja-base main     # the tree to compare with
    .venv/bin/python -m benchmarks.ab_trees --base /tmp/deja-base [--fill 99000] [--rounds 10] [--name ab_trees]
    .venv/bin/python -m benchmarks.ab_trees --base /tmp/deja-base --traffic semantic [--rounds 12]

A change worth a few percent is lost in the noise between two ``bench-peers`` runs (the same tree gave 230 to 295
misses per second at 100,000 entries within an hour). Here both trees run at once, in their default configuration,
on one fake upstream; each is filled with the same spliced Quora questions (``benchmarks.peers``' fillers), then
every round sends the same 600 unique real questions (one Quora question per pair, new each round) to both at
concurrency 32, then the same 100 others to both one at a time, the order alternating. Reported per round: requests
per second and the server's CPU per request at concurrency 32, and the p50 latency at concurrency 1; the result is
the paired ratio (candidate over base) and the paired latency difference, whose spread shows what the machine's
noise did.

``--traffic semantic`` measures semantic hits instead: both trees store the first question of the same
``--pairs`` Quora duplicate pairs and are asked each second question once; the second questions both served
as semantic hits are then asked in surface variants (``benchmarks.peers.surface_variants``: each a new exact key
and a new embedding), a new share of them every round, three quarters at concurrency 32 and the rest one at a
time (the p50 of those served as semantic hits); the rate counts every request of that traffic.
Writes ``benchmarks/results/<name>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers import PAIRS_PER_PHASE, _body, fill_sources, load_data, spliced, surface_variants
from benchmarks.peers_client import Reply, Target, drive
from benchmarks.procs import ROOT, cpu_seconds, memory_kib, run_and_save, start_deja, start_upstream, stop
from benchmarks.qqp import DEFAULT_QQP

REQUESTS_PER_ROUND = 600
CONCURRENCY = 32
ALONE_PER_ROUND = 100


class _Misses:
    """Each round: new unique questions (misses)."""

    counts = "misses"

    def __init__(self, args: argparse.Namespace) -> None:
        self.questions, pairs = load_data(args.data, PAIRS_PER_PHASE)
        self.fillers = spliced(fill_sources(args.data, {t for phase in pairs for pair in phase for t in pair}),
                               args.fill)

    async def prepare(self, targets: dict[str, Target]) -> dict[str, Any]:
        return {}

    def round(self, index: int) -> tuple[list[str], list[str]]:
        return self.questions.take(REQUESTS_PER_ROUND), self.questions.take(ALONE_PER_ROUND)

    def counted(self, reply: Reply) -> bool:
        return reply.status == 200


class _SemanticHits:
    """Each round: new surface variants of questions both trees served as semantic hits."""

    counts = "semantic hits"

    def __init__(self, args: argparse.Namespace) -> None:
        self.pairs = load_data(args.data, args.pairs)[1][0]
        self.fillers = [a for a, _ in self.pairs]
        self.rounds = args.rounds
        self.variants: list[str] = []

    async def prepare(self, targets: dict[str, Target]) -> dict[str, Any]:
        served: set[str] | None = None
        for target in targets.values():
            found = await drive(target, _body("bench", [b for _, b in self.pairs]), len(self.pairs), CONCURRENCY)
            mine = {self.pairs[r.index][1] for r in found.replies if r.cache == "hit-semantic"}
            served = mine if served is None else served & mine
        self.variants = [v for text in sorted(served or ()) for v in surface_variants(text)]
        return {"pairs": len(self.pairs), "served_by_both": len(served or ()), "variants": len(self.variants)}

    def round(self, index: int) -> tuple[list[str], list[str]]:
        per = len(self.variants) // self.rounds
        chunk = self.variants[index * per:(index + 1) * per]
        return chunk[per // 4:], chunk[: per // 4]

    def counted(self, reply: Reply) -> bool:
        return reply.cache == "hit-semantic"


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    traffic: _Misses | _SemanticHits = _SemanticHits(args) if args.traffic == "semantic" else _Misses(args)
    fillers = traffic.fillers
    roots = {"base": args.base.resolve(), "candidate": args.candidate.resolve()}
    work = Path(tempfile.mkdtemp(prefix="deja-ab-"))
    upstream, up_port = start_upstream()
    procs: list[Any] = [upstream]
    result: dict[str, Any] = {"benchmark": "ab_trees", "roots": {k: str(v) for k, v in roots.items()},
                              "traffic": traffic.counts, "fill": len(fillers),
                              "requests_per_round": REQUESTS_PER_ROUND if args.traffic == "misses" else None,
                              "concurrency": CONCURRENCY, "fill_seconds": {}, "rounds": []}
    try:
        targets: dict[str, Target] = {}
        for name, root in roots.items():
            proc, port = start_deja(work / name, up_port, {}, root=root)
            procs.append(proc)
            targets[name] = Target(name, f"http://127.0.0.1:{port}/v1", "bench", proc.pid)
        for name, target in targets.items():
            started = time.perf_counter()
            load = await drive(target, _body("bench", fillers), len(fillers), CONCURRENCY)
            if len(load.ok) != len(fillers):
                raise RuntimeError(f"{name}: {len(fillers) - len(load.ok)} fill requests failed")
            result["fill_seconds"][name] = round(time.perf_counter() - started, 1)
        await asyncio.sleep(3.0)  # the last stores run after the answers
        result["prepared"] = await traffic.prepare(targets)
        for r in range(args.rounds):
            texts, alone = traffic.round(r)
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            row: dict[str, Any] = {}
            for name in order:
                target = targets[name]
                cpu = cpu_seconds(target.pid)
                load = await drive(target, _body("bench", texts), len(texts), CONCURRENCY)
                row[name] = {"rps": round(len(load.ok) / load.wall, 1), "errors": len(texts) - len(load.ok),
                             "cpu_ms": round((cpu_seconds(target.pid) - cpu) / len(texts) * 1000, 3)}
            for name in order:
                load = await drive(targets[name], _body("bench", alone), len(alone), 1)
                row[name]["c1_p50_ms"] = round(statistics.median(r.total for r in load.replies if traffic.counted(r))
                                               * 1000, 3)
            row["ratio"] = round(row["candidate"]["rps"] / row["base"]["rps"], 3)
            row["c1_difference_ms"] = round(row["candidate"]["c1_p50_ms"] - row["base"]["c1_p50_ms"], 3)
            result["rounds"].append(row)
            print(f"round {r}: " + ", ".join(f"{n} {row[n]['rps']:.0f}/s {row[n]['cpu_ms']:.2f} ms CPU"
                                             for n in targets) + f", ratio {row['ratio']}; concurrency 1 p50 "
                  + ", ".join(f"{n} {row[n]['c1_p50_ms']:.2f} ms" for n in targets), flush=True)
        result["rss_mib"] = {name: round(memory_kib(t.pid) / 1024) for name, t in targets.items()}
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    result["summary"] = summarise(result["rounds"])
    return result


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    names = ("base", "candidate")
    return {"ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
            "rounds_candidate_faster": sum(1 for r in rounds if r["ratio"] > 1),
            "c1_difference_ms_median": round(statistics.median(r["c1_difference_ms"] for r in rounds), 3),
            **{f"{n}_c1_p50_ms_median": round(statistics.median(r[n]["c1_p50_ms"] for r in rounds), 3) for n in names},
            **{f"{n}_rps_median": round(statistics.median(r[n]["rps"] for r in rounds), 1) for n in names},
            **{f"{n}_cpu_ms_median": round(statistics.median(r[n]["cpu_ms"] for r in rounds), 3) for n in names}}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["rounds"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, colour in (("base", "#999999"), ("candidate", "#4c72b0")):
        ax.plot(range(len(rounds)), [r[name]["rps"] for r in rounds], "o-", color=colour, label=name)
    ax.set_xlabel("round (the order of the two alternates)")
    ax.set_ylabel(f"requests/s ({result.get('traffic', 'misses')}), concurrency {result['concurrency']}")
    ax.set_title(f"two trees, each filled with {result['fill']:,} entries: median ratio "
                 f"{result['summary']['ratio_median']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the source tree to compare with")
    parser.add_argument("--candidate", type=Path, default=ROOT, help="the source tree measured (default: this one)")
    parser.add_argument("--fill", type=int, default=99_000, help="entries each deja holds before the rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--traffic", choices=("misses", "semantic"), default="misses",
                        help="unique questions (misses), or surface variants of served paraphrases (semantic hits)")
    parser.add_argument("--pairs", type=int, default=6000, help="--traffic semantic: duplicate pairs stored")
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--name", default="ab_trees", help="results/<name>.json and .png")
    args = parser.parse_args()
    result = run_and_save(args.name, lambda: measure(args), plot)
    print(result["summary"])


if __name__ == "__main__":
    main()
