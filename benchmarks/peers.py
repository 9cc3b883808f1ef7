"""deja next to the LiteLLM proxy and the Portkey gateway: same fake upstream, same load, same run, default
configuration (deja's semantic cache ON), measured twice: with a near-empty cache and with the cache filled.

Peers: ``litellm[proxy]`` (the LiteLLM version deja pins, in ``.bench/litellm-proxy``, no cache, no database)
and ``@portkey-ai/gateway`` (npm, in ``.bench/portkey``, Node, no cache; routed to the fake upstream with
``x-portkey-provider: openai`` and ``x-portkey-custom-host``). Every server runs in its own process; the client
is this process. Prompts are unique real questions (Quora, ``../shared/data/qqp-dev.jsonl``, one per pair): nearly every
request is a miss, as most real traffic is, and deja runs its semantic lookup on each (no ``no-store``).

Per phase (``empty``: a few hundred entries; ``full``: after filling the cache to ``--fill`` entries, 100,000 by
default, deja's default capacity, with questions spliced from two real ones, none of them a text the
semantic-hit phases ask or store):

- misses, non-streaming at concurrency 1 and 32, streaming at concurrency 1: p50/p99 end-to-end latency and
  its *added* part (the path's percentile minus the direct path's, same rounds), time to first chunk, requests
  per second, server CPU ms per request. Within a round the paths run one after the other in a rotating order;
  the texts of a round are the same for every path (the peers have no cache; deja sees each text once);
- exact hits (deja): a pool of 32 prompts asked once, then again and again at concurrency 1 and 32;
- semantic hits (deja): ``text_a`` of Quora duplicate pairs is stored, ``text_b`` asked once (discovery); the
  paraphrases served as ``hit-semantic`` are then asked in surface variants (case, spacing, a prefix), each a
  text the process never embedded, half at concurrency 1 and half at 32; only ``hit-semantic`` answers count;
- resident memory of each server (``VmRSS``) and deja's cache size at the end of the phase.

Writes ``benchmarks/results/<--name>.json`` and ``.png`` (default ``peers``); prints a Markdown table.
``--deja-root`` runs deja from another checkout (e.g. main, for a before/after in the same style).

    .venv/bin/python -m benchmarks.peers [--quick]      # or: make bench-peers [QUICK=1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from benchmarks.peers_client import Load, Reply, Target, drive, hit_stats, summary
from benchmarks.procs import (
    LITELLM_PROXY_VERSION,
    PORTKEY_VERSION,
    ROOT,
    ensure_litellm_proxy,
    ensure_portkey,
    memory_kib,
    portkey_headers,
    run_and_save,
    start_deja,
    start_litellm_proxy,
    start_portkey,
    start_upstream,
    stop,
)
from benchmarks.qqp import DEFAULT_QQP, load_pairs

POINTS = (("nonstream", 1), ("nonstream", 32), ("stream", 1))
REQUESTS = {1: 300, 32: 600}
REQUESTS_QUICK = {1: 60, 32: 128}
ROUNDS = 2
PATHS = ("direct", "deja", "litellm_proxy", "portkey")


class Questions:
    """Unique real questions, in a fixed shuffled order; ``take`` never hands one out twice."""

    def __init__(self, texts: list[str]) -> None:
        self._texts = texts
        self._next = 0

    def take(self, n: int) -> list[str]:
        if self._next + n > len(self._texts):
            raise RuntimeError(f"out of unique questions ({len(self._texts)}): use --quick or fewer requests")
        out = self._texts[self._next : self._next + n]
        self._next += n
        return out

    def rest(self) -> list[str]:
        return self._texts[self._next :]


#: Duplicate pairs of each phase's semantic-hit measurement (``--quick``: the smaller). Other benchmarks that
#: say they use bench-peers' questions and fillers load them with the same number.
PAIRS_PER_PHASE, PAIRS_PER_PHASE_QUICK = 600, 150


def load_data(path: Path, pairs_per_phase: int) -> tuple[Questions, list[list[tuple[str, str]]]]:
    """(questions for misses, duplicate pairs for the semantic hits of each phase); no text in both."""
    pairs = load_pairs(path)
    seen: set[str] = set()
    dups: list[tuple[str, str]] = []
    for p in pairs:
        if p.label == 1 and p.text_a != p.text_b and p.text_a not in seen and p.text_b not in seen:
            seen.update((p.text_a, p.text_b))
            dups.append((p.text_a, p.text_b))
    random.Random(5).shuffle(dups)
    phases = [dups[i * pairs_per_phase : (i + 1) * pairs_per_phase] for i in range(2)]
    used = {t for phase in phases for pair in phase for t in pair}
    # One question per Quora pair (text_a): two questions of the same pair are near each other by design.
    questions = sorted({p.text_a for p in pairs} - used - {p.text_b for p in pairs})
    random.Random(6).shuffle(questions)
    return Questions(questions), phases


def fill_sources(path: Path, exclude: Collection[str] = ()) -> list[str]:
    """The other side of every Quora pair (text_b), which the fill splices from, without ``exclude`` (the texts
    of the semantic-hit phases: a filler spliced from a question asked later would answer it in its stead)."""
    return sorted({p.text_b for p in load_pairs(path)} - set(exclude))


def spliced(sources: list[str], n: int, seed: int = 9) -> list[str]:
    """``n`` unique questions, each the first half of one real question and the second half of another (cut
    within a word of the middle). No marker makes them unique: a filler must look like a question to the gate
    and the verifier, as a real stored question would."""
    rng = random.Random(seed)
    words = [s.split() for s in sources if len(s.split()) >= 4]
    real = {" ".join(w) for w in words}
    out: set[str] = set()
    for _ in range(50 * n + 1000):
        if len(out) >= n:
            break
        a, b = rng.choice(words), rng.choice(words)
        cut_a, cut_b = len(a) // 2 + rng.randint(-1, 1), len(b) // 2 + rng.randint(-1, 1)
        text = " ".join(a[:cut_a] + b[cut_b:])
        if text not in real:
            out.add(text)
    if len(out) < n:
        raise ValueError(f"{len(sources)} sources cannot make {n} unique questions")
    return sorted(out)


def _body(model: str, texts: list[str], stream: bool = False) -> Any:
    return lambda i: {"model": model, "stream": stream, "messages": [{"role": "user", "content": texts[i]}]}


def _describe(loads: list[Load], pid: int) -> dict[str, Any]:
    replies = [r for load in loads for r in load.replies]
    ok = [r for r in replies if r.status == 200]
    wall = sum(load.wall for load in loads)
    errors = [r for r in replies if r.status != 200]
    out: dict[str, Any] = {
        "requests": len(replies), "errors": len(errors), "latency": summary([r.total for r in ok]),
        "rps": len(ok) / wall if wall else 0.0,
        "cpu_ms_per_request": 1000 * sum(load.cpu for load in loads) / max(1, len(replies)),
        "cache": _count(r.cache for r in ok)}
    if any(r.ttfc is not None for r in ok):
        out["ttfc"] = summary([r.ttfc for r in ok if r.ttfc is not None])
    if errors:
        out["first_error"] = errors[0].error or f"HTTP {errors[0].status}"
    return out


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v or "-"] = out.get(v or "-", 0) + 1
    return out


def _added(row: dict[str, Any], name: str, metric: str) -> dict[str, float] | None:
    mine, base = row[name].get(metric), row["direct"].get(metric)
    if not mine or not base:
        return None
    return {"p50_ms": mine["p50_ms"] - base["p50_ms"], "p99_ms": mine["p99_ms"] - base["p99_ms"]}


async def miss_point(targets: dict[str, Target], stream: bool, concurrency: int, n: int, turn: int,
                     questions: Questions) -> dict[str, Any]:
    loads: dict[str, list[Load]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(ROUNDS):
        texts = questions.take(max(concurrency, n // ROUNDS))
        shift = (turn + r) % len(names)
        for name in names[shift:] + names[:shift]:
            target = targets[name]
            loads[name].append(await drive(target, _body(target.model, texts, stream), len(texts), concurrency))
    row = {name: _describe(loads[name], targets[name].pid) for name in names}
    for name in names:
        if name != "direct":
            row[name]["added_latency"] = _added(row, name, "latency")
            if stream:
                row[name]["added_ttfc"] = _added(row, name, "ttfc")
    return row


async def exact_hits(deja: Target, sizes: dict[int, int], questions: Questions, pool: int = 32) -> dict[str, Any]:
    texts = questions.take(pool)
    seed = await drive(deja, _body(deja.model, texts), pool, 1)
    if any(r.status != 200 for r in seed.replies):
        raise RuntimeError(f"deja: seeding the exact cache failed: {seed.replies[0]}")
    await asyncio.sleep(1.0)  # stores run after the answers
    repeated = [texts[i % pool] for i in range(max(sizes.values()))]
    out: dict[str, Any] = {}
    for concurrency in (1, 32):
        load = await drive(deja, _body(deja.model, repeated), sizes[concurrency], concurrency)
        out[f"c{concurrency}"] = hit_stats([load], lambda r: r.cache == "hit-exact")
    return out


def surface_variants(text: str) -> list[str]:
    """Four rewordings of the surface only (each a different exact key and a new embedding)."""
    bare = text.strip().rstrip("?").strip()
    out = [bare.lower() + "?", bare + " ?", "Question: " + text, "Please answer: " + text]
    return [v for v in dict.fromkeys(out) if v != text]


async def semantic_hits(deja: Target, pairs: list[tuple[str, str]], sizes: dict[int, int]) -> dict[str, Any]:
    await drive(deja, _body(deja.model, [a for a, _ in pairs]), len(pairs), 32)
    await asyncio.sleep(1.5)  # stores run after the answers
    found = await drive(deja, _body(deja.model, [b for _, b in pairs]), len(pairs), 32)
    served = [pairs[r.index][1] for r in found.replies if r.cache == "hit-semantic"]
    variants = [v for text in served for v in surface_variants(text)]
    out: dict[str, Any] = {"pairs": len(pairs), "served_in_discovery": len(served),
                           "discovery_hit_share": len(served) / max(1, len(pairs))}
    halves = {1: variants[0::2][: sizes[1]], 32: variants[1::2][: sizes[32]]}
    for concurrency, chosen in halves.items():
        load = await drive(deja, _body(deja.model, chosen), len(chosen), concurrency) if chosen else None
        out[f"c{concurrency}"] = hit_stats([load], lambda r: r.cache == "hit-semantic") if load else None
    return out


async def fill(deja: Target, texts: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    load = await drive(deja, _body(deja.model, texts), len(texts), 32)
    await asyncio.sleep(2.0)  # the last stores
    return {"requests": len(texts), "errors": sum(1 for r in load.replies if r.status != 200),
            "seconds": time.perf_counter() - started, "rps": len(load.ok) / load.wall if load.wall else 0.0}


async def streams_work(target: Target) -> str | None:
    """None when a streaming request through ``target`` succeeds, else what went wrong."""
    load = await drive(target, _body(target.model, ["stream probe?"], True), 1, 1)
    reply: Reply = load.replies[0]
    return None if reply.status == 200 and reply.ttfc is not None else (reply.error or f"HTTP {reply.status}")


async def phase(targets: dict[str, Target], sizes: dict[int, int], questions: Questions,
                pairs: list[tuple[str, str]], stream_targets: dict[str, Target]) -> dict[str, Any]:
    out: dict[str, Any] = {"misses": {}}
    for turn, (mode, concurrency) in enumerate(POINTS):
        chosen = stream_targets if mode == "stream" else targets
        row = await miss_point(chosen, mode == "stream", concurrency, sizes[concurrency], turn, questions)
        out["misses"][f"{mode}_c{concurrency}"] = row
        print(f"  {mode} c{concurrency}: " + " | ".join(
            f"{name} p50 {row[name]['latency']['p50_ms']:.1f} ms {row[name]['rps']:.0f}/s"
            + (f" ttfc {row[name]['ttfc']['p50_ms']:.1f}" if row[name].get("ttfc") else "")
            for name in row if row[name].get("latency")), flush=True)
    deja = targets["deja"]
    out["exact_hits"] = await exact_hits(deja, sizes, questions)
    out["semantic_hits"] = await semantic_hits(deja, pairs, sizes)
    for kind in ("exact_hits", "semantic_hits"):
        for c in ("c1", "c32"):
            row = out[kind].get(c) or {}
            if row.get("latency"):
                print(f"  {kind} {c}: p50 {row['latency']['p50_ms']:.1f} ms, {row['hits']}/{row['requests']} hits, "
                      f"{row['hits_per_s']:.0f} hits/s", flush=True)
    out["rss_mib"] = {name: memory_kib(t.pid, "VmRSS") / 1024 for name, t in targets.items()}
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = REQUESTS_QUICK if args.quick else REQUESTS
    fill_to = args.fill if args.fill is not None else (10_000 if args.quick else 100_000)
    questions, pairs = load_data(args.data, PAIRS_PER_PHASE_QUICK if args.quick else PAIRS_PER_PHASE)
    litellm = args.litellm_proxy or ensure_litellm_proxy()
    portkey = ensure_portkey()
    work = Path(tempfile.mkdtemp(prefix="deja-peers-"))
    procs: list[Any] = []
    result: dict[str, Any] = {
        "benchmark": "peers", "quick": args.quick, "requests_per_point": {f"c{c}": n for c, n in sizes.items()},
        "rounds_per_point": ROUNDS, "litellm_proxy_version": LITELLM_PROXY_VERSION,
        "portkey_version": PORTKEY_VERSION, "deja_root": str(args.deja_root),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "deja_config": "default (cache on, semantic on, memory store, capacity 100,000); log_level warning",
        "peers_config": "LiteLLM proxy: no cache, no database; Portkey gateway: defaults, no cache"}
    try:
        upstream, up_port = start_upstream()
        deja, port = start_deja(work / "deja", up_port, {}, root=args.deja_root)
        proxy, proxy_port = start_litellm_proxy(litellm, work / "litellm", up_port)
        gateway, gateway_port = start_portkey(portkey, work / "portkey")
        procs += [upstream, deja, proxy, gateway]
        targets = {
            "direct": Target("direct", f"http://127.0.0.1:{up_port}/v1", "gpt-4o-mini", upstream.pid),
            "deja": Target("deja", f"http://127.0.0.1:{port}/v1", "bench", deja.pid),
            "litellm_proxy": Target("litellm_proxy", f"http://127.0.0.1:{proxy_port}/v1", "bench", proxy.pid),
            "portkey": Target("portkey", f"http://127.0.0.1:{gateway_port}/v1", "gpt-4o-mini", gateway.pid,
                              portkey_headers(up_port))}
        stream_targets = dict(targets)
        problem = await streams_work(targets["portkey"])
        if problem:
            del stream_targets["portkey"]
            result["portkey_stream_error"] = problem
        print("phase empty", flush=True)
        result["empty"] = await phase(targets, sizes, questions, pairs[0], stream_targets)
        hit_phase_texts = {t for phase_pairs in pairs for pair in phase_pairs for t in pair}
        fill_texts = spliced(fill_sources(args.data, hit_phase_texts), max(0, fill_to - 1000))
        print(f"filling deja with {len(fill_texts)} entries", flush=True)
        result["fill"] = await fill(targets["deja"], fill_texts)
        print(f"phase full ({result['fill']})", flush=True)
        result["full"] = await phase(targets, sizes, questions, pairs[1], stream_targets)
        result["peak_rss_mib"] = {name: memory_kib(t.pid, "VmHWM") / 1024 for name, t in targets.items()}
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return result


def _cell(row: dict[str, Any] | None, metric: str = "latency", added: bool = False) -> str:
    if not row:
        return "–"
    stats = row.get(f"added_{metric}" if added else metric)
    return "–" if not stats else f"{stats['p50_ms']:.1f}"


def _hits(row: dict[str, Any] | None) -> str:
    if not row or not row.get("latency"):
        return "–"
    return f"{row['latency']['p50_ms']:.1f} ms / {row['hits_per_s']:.0f} per s"


def markdown_table(result: dict[str, Any]) -> str:
    """One Markdown table: per phase, deja and the peers side by side."""
    names = [n for n in PATHS if n != "direct"]
    head = "| | " + " | ".join(f"{n} ({p})" for p in ("empty", "full") for n in names) + " |"
    out = [head, "| --- |" + " ---: |" * (2 * len(names))]

    def row(label: str, get: Any) -> None:
        out.append(f"| {label} | " + " | ".join(get(result[p], n) for p in ("empty", "full") for n in names) + " |")

    miss = lambda p, key: p["misses"][key]  # noqa: E731
    row("miss, c=1: added p50 (ms)", lambda p, n: _cell(miss(p, "nonstream_c1").get(n), added=True))
    row("miss, c=1: p50 (ms)", lambda p, n: _cell(miss(p, "nonstream_c1").get(n)))
    row("miss, c=32: req/s", lambda p, n: f"{miss(p, 'nonstream_c32')[n]['rps']:.0f}")
    row("miss, c=32: CPU ms/req", lambda p, n: f"{miss(p, 'nonstream_c32')[n]['cpu_ms_per_request']:.2f}")
    row("stream miss, c=1: added TTFC p50 (ms)", lambda p, n: _cell(miss(p, "stream_c1").get(n), "ttfc", True))
    for kind in ("exact_hits", "semantic_hits"):
        for c in ("c1", "c32"):
            row(f"{kind.replace('_', ' ')}, c={c[1:]}: p50 / rate",
                lambda p, n, k=kind, c=c: _hits(p[k].get(c)) if n == "deja" else "n/a")
    row("RSS after the phase (MiB)", lambda p, n: f"{p['rss_mib'][n]:.0f}")
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in PATHS if n != "direct"]
    panels = [("nonstream_c1", "added_latency", "miss, c=1: added p50 latency (ms)"),
              ("nonstream_c32", "rps", "miss, c=32: requests/s"),
              ("stream_c1", "added_ttfc", "stream miss, c=1: added p50 TTFC (ms)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (key, metric, title) in zip(axes, panels, strict=True):
        for i, phase_name in enumerate(("empty", "full")):
            points = result[phase_name]["misses"][key]
            ys = []
            for n in names:
                cell = points.get(n) or {}
                value = cell.get(metric) if metric == "rps" else (cell.get(metric) or {}).get("p50_ms")
                ys.append(float(value) if value is not None else 0.0)
            ax.bar([x + 0.4 * i for x in range(len(names))], ys, width=0.4, label=f"cache {phase_name}")
        ax.set_xticks([x + 0.2 for x in range(len(names))], names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fill = result.get("fill", {}).get("requests", 0)
    fig.suptitle(f"deja (default config, semantic cache on) vs LiteLLM proxy vs Portkey; 'full' = {fill:,} entries "
                 f"filled first ({result['machine']['cpus']} cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests per point, 10,000 entries filled")
    parser.add_argument("--fill", type=int, default=None, help="entries to fill before the second phase")
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--deja-root", type=Path, default=ROOT, help="run deja from this source tree")
    parser.add_argument("--name", default="peers", help="results/<name>.json and .png")
    parser.add_argument("--litellm-proxy", metavar="BIN", default=os.environ.get("LITELLM_PROXY_BIN"),
                        help="an installed `litellm` binary to use instead of .bench/litellm-proxy")
    args = parser.parse_args()
    result = run_and_save(args.name, lambda: main_async(args), plot)
    print()
    print(markdown_table(result))


if __name__ == "__main__":
    main()
