"""deja next to the LiteLLM proxy: the same model list, the same fake upstream, the same load, in the same run.

``litellm[proxy]`` (the LiteLLM version deja pins) is installed once into its own virtual environment under
``.bench/litellm-proxy``. Every server runs in its own process, as in production; the client is this process.

Load (cache misses): at concurrency 1, 8, 32 and 128, non-streaming and streaming, each measurement point is run in
rounds, and within a round the three paths run one after the other in a rotating order (direct to the upstream,
deja, the LiteLLM proxy), so drift on a shared machine hits all three alike. deja gets ``Cache-Control: no-store``
(no lookup, no store); the proxy runs without a cache. Each request has a unique prompt. Per path and point:

- p50 / p99 / mean end-to-end latency (streaming: to the end of the stream), and the *added* latency: the proxy's
  percentile minus the direct path's, measured in the same round set;
- streaming: time to the first ``data:`` chunk (TTFC) and its added part;
- requests per second (successful requests / wall-clock seconds of the load);
- CPU time per request of the server process (delta of utime + stime in ``/proc/<pid>/stat`` across the load,
  divided by the requests sent; for the direct path that is the fake upstream's);
- resident memory after the point (``VmRSS``); the peak (``VmHWM``) of each server is reported once at the end.

**Requests per second at a p99 bound of 50 ms** (``rps_at_p99_50ms``): the highest requests per second among the
concurrency levels (1, 8, 32, 128) whose p99 end-to-end latency is at most 50 ms; ``null`` when none is.

Cache hits, end-to-end through HTTP:

- exact: a pool of prompts is asked once (stored), then asked again and again at concurrency 1 and 32 — deja
  (exact tier) against the LiteLLM proxy with its in-memory cache (``litellm_settings: {cache: true,
  cache_params: {type: local}}``). A LiteLLM answer counts as a hit only when it carries the ``x-litellm-cache-key``
  header and the very ``id`` of the stored answer (the fake upstream makes a fresh id for every answer it gives);
  a deja answer when its ``X-Deja-Cache`` is ``hit-exact``. Reported: p50/p99 latency of the hits, hits per second.
- semantic: deja only (LiteLLM's semantic cache needs Redis Stack / RediSearch or Qdrant, neither is available
  here). Quora duplicate pairs: ``text_a`` is stored, then ``text_b`` asked; only ``hit-semantic`` answers count.
  Because deja's embedder keeps recent texts in an LRU, every measured paraphrase must be new to the process: a
  first deja finds which paraphrases the verifier serves, a fresh deja stores the same ``text_a`` pool and is asked
  those paraphrases, each also in four surface variants (lower case, spacing, a "Question:" or "Please answer:"
  prefix) so the load at concurrency 32 is long enough for a steady rate; half the texts at concurrency 1, half at
  32. Every measured request is a text the process has never embedded; only ``hit-semantic`` answers count.

Writes ``benchmarks/results/peers.json`` and ``peers.png``; prints a table, and ``markdown_table`` renders one from
the JSON for the README.

    .venv/bin/python -m benchmarks.peers [--quick]      # or: make bench-peers [QUICK=1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.procs import (
    LITELLM_PROXY_VERSION,
    cpu_seconds,
    ensure_litellm_proxy,
    memory_kib,
    run_and_save,
    start_deja,
    start_litellm_proxy,
    start_upstream,
    stop,
)

CONCURRENCY = (1, 8, 32, 128)
P99_BOUND_MS = 50.0
REQUESTS = {1: 400, 8: 400, 32: 400, 128: 1000}
REQUESTS_QUICK = {1: 60, 8: 60, 32: 64, 128: 256}
PATHS = ("direct", "deja", "litellm_proxy")
LITELLM_CACHE = {"cache": True, "cache_params": {"type": "local"}}
NO_SEMANTIC_PEER = ("LiteLLM's semantic cache (redis-semantic / qdrant-semantic) needs Redis Stack with RediSearch "
                    "or a Qdrant server; neither is available here, so semantic hits are measured for deja only")


@dataclass
class Reply:
    """One answer as the client saw it. ``status`` 0: the request raised (``error`` says what)."""

    status: int
    total: float
    ttfc: float | None = None
    cache: str = ""
    response_id: str = ""
    litellm_cache_key: bool = False
    error: str = ""
    index: int = -1  # which request of the load (``body(index)``)


@dataclass
class Target:
    name: str
    base_url: str  # ".../v1"
    model: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Load:
    replies: list[Reply]
    wall: float
    cpu: float  # server CPU seconds spent during the load (warm-up excluded)

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.status == 200]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank, as ``overhead.py``)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(seconds: list[float]) -> dict[str, float] | None:
    """p50 / p99 / mean in milliseconds; None for no values."""
    if not seconds:
        return None
    return {"p50_ms": pct(seconds, 0.5) * 1000, "p99_ms": pct(seconds, 0.99) * 1000,
            "mean_ms": statistics.fmean(seconds) * 1000}


def rps_at_p99_bound(points: dict[str, dict[str, Any]], bound_ms: float = P99_BOUND_MS) -> dict[str, Any] | None:
    """The highest ``rps`` among ``points`` (``{"c32": {"rps": .., "latency": {"p99_ms": ..}}, ...}``) whose p99
    end-to-end latency is at most ``bound_ms``, with the concurrency it came from; None when no point qualifies."""
    best: dict[str, Any] | None = None
    for key, point in points.items():
        latency = point.get("latency") or {}
        if latency.get("p99_ms") is None or latency["p99_ms"] > bound_ms:
            continue
        if best is None or point["rps"] > best["rps"]:
            best = {"rps": point["rps"], "concurrency": int(key.removeprefix("c")), "p99_ms": latency["p99_ms"]}
    return best


async def send(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str],
               want_id: bool = False) -> Reply:
    """POST one chat completion; time to the full answer (streams: to their end) and to the first data chunk."""
    start = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as r:
            ttfc = None
            response_id = ""
            if r.status == 200 and body.get("stream"):
                async for line in r.content:
                    if ttfc is None and line.startswith(b"data: "):
                        ttfc = time.perf_counter() - start
                        if want_id:
                            response_id = str(json.loads(line[6:]).get("id", ""))
            else:
                data = await r.read()
                if want_id and r.status == 200:
                    response_id = str(json.loads(data).get("id", ""))
            return Reply(r.status, time.perf_counter() - start, ttfc, r.headers.get("X-Deja-Cache", ""),
                         response_id, "x-litellm-cache-key" in r.headers)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Reply(0, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")


async def drive(target: Target, body: Callable[[int], dict[str, Any]], n: int, concurrency: int,
                want_id: bool = False) -> Load:
    """``n`` requests (``body(i)``) from ``concurrency`` workers over ``concurrency`` kept-alive connections, after
    a warm-up that opens them; the server's CPU time is read around the measured part only."""
    url = target.base_url + "/chat/completions"
    replies: list[Reply] = []
    counter = iter(range(n))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        async def worker() -> None:
            for i in counter:
                reply = await send(session, url, body(i), target.headers, want_id)
                reply.index = i
                replies.append(reply)

        warm = {**body(0), "stream": False, "messages": [{"role": "user", "content": f"warm-up {time.time_ns()}"}]}
        await asyncio.gather(*(send(session, url, warm, target.headers) for _ in range(min(concurrency, n))))
        cpu = cpu_seconds(target.pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = cpu_seconds(target.pid) - cpu
    return Load(replies, wall, cpu)


def unique_prompts(model: str, stream: bool) -> Callable[[int], dict[str, Any]]:
    tag = time.time_ns()

    def body(i: int) -> dict[str, Any]:
        return {"model": model, "stream": stream,
                "messages": [{"role": "user", "content": f"question {i} of run {tag}: what is {i} squared?"}]}
    return body


def _describe(loads: list[Load], pid: int) -> dict[str, Any]:
    replies = [r for load in loads for r in load.replies]
    ok = [r for r in replies if r.status == 200]
    wall = sum(load.wall for load in loads)
    errors = [r for r in replies if r.status != 200]
    out: dict[str, Any] = {
        "requests": len(replies), "errors": len(errors), "latency": summary([r.total for r in ok]),
        "rps": len(ok) / wall if wall else 0.0,
        "cpu_ms_per_request": 1000 * sum(load.cpu for load in loads) / max(1, len(replies)),
        "rss_mib_after": memory_kib(pid, "VmRSS") / 1024}
    if any(r.ttfc is not None for r in ok):
        out["ttfc"] = summary([r.ttfc for r in ok if r.ttfc is not None])
    if errors:
        out["first_error"] = errors[0].error or f"HTTP {errors[0].status}"
    return out


def _added(row: dict[str, Any], name: str, metric: str) -> dict[str, float] | None:
    mine, base = row[name].get(metric), row["direct"].get(metric)
    if not mine or not base:
        return None
    return {"p50_ms": mine["p50_ms"] - base["p50_ms"], "p99_ms": mine["p99_ms"] - base["p99_ms"]}


async def miss_point(targets: dict[str, Target], stream: bool, concurrency: int, n: int, rounds: int,
                     turn: int) -> dict[str, Any]:
    """One measurement point: ``rounds`` rounds of ``n / rounds`` requests per path, the paths in a rotating
    order (``turn`` shifts it from point to point)."""
    loads: dict[str, list[Load]] = {name: [] for name in targets}
    names = list(targets)
    per_round = max(concurrency, n // rounds)
    for r in range(rounds):
        shift = (turn + r) % len(names)
        for name in names[shift:] + names[:shift]:
            target = targets[name]
            loads[name].append(await drive(target, unique_prompts(target.model, stream), per_round, concurrency))
    row = {name: _describe(loads[name], targets[name].pid) for name in names}
    for name in names:
        if name != "direct":
            row[name]["added_latency"] = _added(row, name, "latency")
            if stream:
                row[name]["added_ttfc"] = _added(row, name, "ttfc")
    return row


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _p(stats: dict[str, float] | None, signed: bool = False) -> str:
    return "–" if not stats else f"{_ms(stats['p50_ms'], signed)} / {_ms(stats['p99_ms'], signed)}"


def print_point(mode: str, concurrency: int, row: dict[str, Any]) -> None:
    parts = [f"{mode:9} c{concurrency:<4}", f"direct {_p(row['direct']['latency'])} ms {row['direct']['rps']:6.0f}/s"]
    for name in ("deja", "litellm_proxy"):
        if name in row:
            cell = row[name]
            extra = f" ttfc {_p(cell.get('added_ttfc'), True)}" if mode == "stream" else ""
            parts.append(f"{name} added {_p(cell['added_latency'], True)} ms{extra} {cell['rps']:6.0f}/s "
                         f"cpu {cell['cpu_ms_per_request']:.2f} ms/req" + (f" ERR {cell['errors']}" if cell['errors']
                                                                            else ""))
    print(" | ".join(parts), flush=True)


async def load_matrix(targets: dict[str, Target], sizes: dict[int, int], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    turn = 0
    for stream in (False, True):
        mode = "stream" if stream else "nonstream"
        out[mode] = {}
        for concurrency in CONCURRENCY:
            row = await miss_point(targets, stream, concurrency, sizes[concurrency], rounds, turn)
            turn += 1
            out[mode][f"c{concurrency}"] = row
            print_point(mode, concurrency, row)
    return out


def hit_stats(load_list: list[Load], is_hit: Callable[[Reply], bool]) -> dict[str, Any]:
    replies = [r for load in load_list for r in load.replies]
    hits = [r for r in replies if r.status == 200 and is_hit(r)]
    wall = sum(load.wall for load in load_list)
    return {"requests": len(replies), "hits": len(hits), "errors": sum(1 for r in replies if r.status != 200),
            "latency": summary([r.total for r in hits]), "hits_per_s": len(hits) / wall if wall else 0.0,
            "cpu_ms_per_request": 1000 * sum(load.cpu for load in load_list) / max(1, len(replies))}


async def exact_hits(targets: dict[str, Target], sizes: dict[int, int], rounds: int,
                     pool: int = 32) -> dict[str, Any]:
    """Store ``pool`` prompts (one answer each), then ask them again, round robin, at concurrency 1 and 32."""
    tag = time.time_ns()

    def body_for(model: str) -> Callable[[int], dict[str, Any]]:
        return lambda i: {"model": model, "messages": [
            {"role": "user", "content": f"cached question {i % pool} ({tag}): name a prime above {i % pool}"}]}

    seeded: dict[str, list[str]] = {}
    for name, target in targets.items():
        seed = await drive(target, body_for(target.model), pool, 1, want_id=True)
        if any(r.status != 200 for r in seed.replies):
            raise RuntimeError(f"{name}: seeding the exact cache failed: {seed.replies[0]}")
        seeded[name] = [r.response_id for r in seed.replies]
    await asyncio.sleep(1.0)  # both store after answering

    def hit_rule(name: str) -> Callable[[Reply], bool]:
        if name == "deja":
            return lambda r: r.cache == "hit-exact"
        ids = set(seeded[name])
        return lambda r: r.litellm_cache_key and r.response_id in ids

    out: dict[str, Any] = {}
    names = list(targets)
    for turn, concurrency in enumerate((1, 32)):
        loads: dict[str, list[Load]] = {name: [] for name in names}
        for r in range(rounds):
            shift = (turn + r) % len(names)
            for name in names[shift:] + names[:shift]:
                target = targets[name]
                loads[name].append(await drive(target, body_for(target.model), sizes[concurrency] // rounds,
                                               concurrency, want_id=name != "deja"))
        out[f"c{concurrency}"] = {name: hit_stats(loads[name], hit_rule(name)) for name in names}
        print(f"exact hits c{concurrency}: " + " | ".join(
            f"{name} {_p(row['latency'])} ms, {row['hits']}/{row['requests']} hits, {row['hits_per_s']:.0f} hits/s"
            for name, row in out[f"c{concurrency}"].items()), flush=True)
    return out


async def _ask_all(target: Target, texts: list[str], concurrency: int) -> Load:
    return await drive(target, lambda i: {"model": target.model, "messages": [{"role": "user", "content": texts[i]}]},
                       len(texts), concurrency)


def surface_variants(text: str) -> list[str]:
    """The text and four rewordings of its surface only (each a different exact key and a new embedding)."""
    bare = text.strip().rstrip("?").strip()
    out = [text, bare.lower() + "?", bare + " ?", "Question: " + text, "Please answer: " + text]
    return list(dict.fromkeys(out))


async def semantic_hits(work: Path, up_port: int, pool_size: int | None, n_per_level: dict[int, int],
                        procs: list[Any]) -> dict[str, Any]:
    """deja only; see the module docstring for why two processes."""
    from benchmarks.qqp import load_pairs

    pairs = [p for p in load_pairs() if p.label == 1]
    seen: set[str] = set()
    unique = []
    for p in pairs:  # each paraphrase and each stored question once, and never the one as the other
        if p.text_a not in seen and p.text_b not in seen and p.text_a != p.text_b:
            seen.update((p.text_a, p.text_b))
            unique.append(p)
    pool = unique[:pool_size] if pool_size else unique
    seeds = [p.text_a for p in pool]

    async def fresh_deja(name: str) -> tuple[Target, Any]:
        proc, port = start_deja(work / name, up_port, {})
        procs.append(proc)
        target = Target("deja", f"http://127.0.0.1:{port}/v1", "bench", proc.pid)
        await _ask_all(target, seeds, 32)
        await asyncio.sleep(1.5)  # stores happen after the answers
        return target, proc

    first, first_proc = await fresh_deja("semantic-find")
    found = await _ask_all(first, [p.text_b for p in pool], 32)
    stop(first_proc)
    procs.remove(first_proc)
    served = [pool[i] for i in sorted(r.index for r in found.replies if r.cache == "hit-semantic")]
    print(f"semantic: {len(served)} of {len(pool)} duplicate paraphrases served as hit-semantic", flush=True)

    second, _ = await fresh_deja("semantic-measure")
    out: dict[str, Any] = {
        "pool_pairs": len(pool), "paraphrases_served_in_discovery": len(served),
        "discovery_hit_share": len(served) / len(pool) if pool else 0.0,
        "data": "Quora duplicate pairs (label 1) of ../shared/data/qqp-dev.jsonl, all splits (latency only: no "
                "quality figure is taken from them), each text once",
        "litellm_proxy": None, "litellm_proxy_reason": NO_SEMANTIC_PEER}
    # Each served paraphrase is also asked in surface variants (case, punctuation, a polite prefix): every one is
    # a text the measuring process has never embedded, so the load is long enough for a steady rate at c32.
    variants = [v for p in served for v in surface_variants(p.text_b)]
    out["variants_per_paraphrase"] = len(variants) / len(served) if served else 0.0
    halves = {1: variants[0::2][: n_per_level[1]], 32: variants[1::2][: n_per_level[32]]}
    for concurrency, chosen in halves.items():
        if not chosen:
            out[f"c{concurrency}"] = None
            continue
        load = await _ask_all(second, chosen, concurrency)
        out[f"c{concurrency}"] = {"deja": hit_stats([load], lambda r: r.cache == "hit-semantic")}
        row = out[f"c{concurrency}"]["deja"]
        print(f"semantic hits c{concurrency}: deja {_p(row['latency'])} ms, {row['hits']}/{row['requests']} hits, "
              f"{row['hits_per_s']:.0f} hits/s", flush=True)
    out["peak_rss_mib_deja_semantic"] = memory_kib(second.pid, "VmHWM") / 1024
    return out


def _git_commit() -> str | None:
    head = Path(__file__).resolve().parents[1] / ".git"
    try:
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            return (head / ref.removeprefix("ref: ")).read_text().strip()
        return ref
    except OSError:
        return None


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = REQUESTS_QUICK if args.quick else REQUESTS
    rounds = 2
    binary = args.litellm_proxy or ensure_litellm_proxy()
    work = Path(tempfile.mkdtemp(prefix="deja-peers-"))
    procs: list[Any] = []
    result: dict[str, Any] = {
        "benchmark": "peers", "quick": args.quick, "requests_per_point": {f"c{c}": n for c, n in sizes.items()},
        "rounds_per_point": rounds, "litellm_proxy_version": LITELLM_PROXY_VERSION, "deja_commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "definitions": {
            "added_latency": "path percentile minus the direct path's percentile at the same point (ms)",
            "latency": "end-to-end: to the full answer; streaming: to the end of the stream",
            "ttfc": "time to the first SSE data chunk",
            "rps": "successful requests / wall-clock seconds of the load",
            "rps_at_p99_50ms": f"the highest rps among concurrency levels {list(CONCURRENCY)} whose p99 end-to-end "
                               f"latency <= {P99_BOUND_MS:.0f} ms (null: none)",
            "cpu_ms_per_request": "server process utime+stime delta (/proc/<pid>/stat) over the load / requests",
            "peak_rss_mib": "VmHWM of the server process (/proc/<pid>/status) after the load",
            "interleaving": "each point runs in rounds; within a round direct, deja and the LiteLLM proxy run one "
                            "after the other in an order that rotates from round to round and point to point",
            "deja_miss_config": "cache on, semantic off, requests sent with Cache-Control: no-store; usage "
                                "persistence to SQLite on; log_level warning",
            "litellm_miss_config": "no cache, no database, default logging",
        }}
    try:
        upstream, up_port = start_upstream()
        procs.append(upstream)
        deja, port = start_deja(work / "deja", up_port, {"cache": {"semantic": False}})
        procs.append(deja)
        proxy, proxy_port = start_litellm_proxy(binary, work / "litellm", up_port)
        procs.append(proxy)
        no_store = {"Cache-Control": "no-store"}
        targets = {"direct": Target("direct", f"http://127.0.0.1:{up_port}/v1", "gpt-4o-mini", upstream.pid),
                   "deja": Target("deja", f"http://127.0.0.1:{port}/v1", "bench", deja.pid, no_store),
                   "litellm_proxy": Target("litellm_proxy", f"http://127.0.0.1:{proxy_port}/v1", "bench",
                                           proxy.pid)}
        load = await load_matrix(targets, sizes, rounds)
        result["load"] = load
        result["rps_at_p99_50ms"] = {mode: {name: rps_at_p99_bound({k: row[name] for k, row in points.items()})
                                            for name in PATHS} for mode, points in load.items()}
        result["peak_rss_mib"] = {name: memory_kib(t.pid, "VmHWM") / 1024 for name, t in targets.items()}
        result["peak_rss_mib"]["note"] = "direct: the fake upstream process"
        stop(proxy)
        procs.remove(proxy)

        cached, cached_port = start_litellm_proxy(binary, work / "litellm-cache", up_port, LITELLM_CACHE)
        procs.append(cached)
        hit_targets = {"deja": Target("deja", f"http://127.0.0.1:{port}/v1", "bench", deja.pid),
                       "litellm_proxy": Target("litellm_proxy", f"http://127.0.0.1:{cached_port}/v1", "bench",
                                               cached.pid)}
        exact = await exact_hits(hit_targets, sizes, rounds)
        litellm_hits = sum(exact[k]["litellm_proxy"]["hits"] for k in ("c1", "c32"))
        litellm_asked = sum(exact[k]["litellm_proxy"]["requests"] for k in ("c1", "c32"))
        exact["litellm_cache_config"] = {"litellm_settings": LITELLM_CACHE}
        exact["litellm_cache_verified"] = litellm_hits == litellm_asked > 0
        exact["litellm_cache_note"] = (
            f"{litellm_hits} of {litellm_asked} repeated LiteLLM requests came back with the x-litellm-cache-key "
            "header and the stored answer's id (a fresh upstream answer has a new id)")
        exact["peak_rss_mib"] = {"deja": memory_kib(deja.pid, "VmHWM") / 1024,
                                 "litellm_proxy": memory_kib(cached.pid, "VmHWM") / 1024}
        for proc in (cached, deja):
            stop(proc)
            procs.remove(proc)

        semantic = await semantic_hits(work, up_port, 600 if args.quick else None, {1: sizes[1], 32: sizes[128]},
                                       procs)
        result["cache_hits"] = {"exact": exact, "semantic": semantic}
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("nonstream", "added_latency", "added p50 latency, non-streaming (ms)"),
              ("stream", "added_ttfc", "added p50 time to first chunk, streaming (ms)"),
              ("nonstream", "rps", "requests/s, non-streaming"), ("stream", "rps", "requests/s, streaming")]
    colours = {"direct": "tab:gray", "deja": "tab:blue", "litellm_proxy": "tab:orange"}
    for ax, (mode, metric, title) in zip(axes.flat, panels, strict=True):
        points = result["load"][mode]
        xs = [int(k.removeprefix("c")) for k in points]
        for name in PATHS if metric == "rps" else PATHS[1:]:
            if metric == "rps":
                ys = [points[k][name]["rps"] for k in points]
            else:
                # a log axis: an added latency at or under 0.01 ms (within noise of the direct call) is drawn at 0.01
                ys = [max(0.01, (points[k][name].get(metric) or {}).get("p50_ms", float("nan"))) for k in points]
            ax.plot(xs, ys, marker="o", label=name, color=colours[name])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrency")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("deja vs LiteLLM proxy, same fake upstream, same run (one process each, "
                 f"{result['machine']['cpus']} cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def _rps_cell(value: dict[str, Any] | None) -> str:
    return "none ≤ 50 ms" if not value else f"{value['rps']:.0f} (c{value['concurrency']})"


def _hit_cell(row: dict[str, Any] | None) -> str:
    if not row or not row.get("latency"):
        return "–"
    return f"{_p(row['latency'])} ms, {row['hits_per_s']:.0f}/s"


def markdown_table(result: dict[str, Any]) -> str:
    """The results as Markdown tables (load per point; then throughput bound, memory and cache hits)."""
    out = ["| mode | concurrency | added latency p50 / p99, ms: deja | LiteLLM proxy | added TTFC p50 / p99, ms: "
           "deja | LiteLLM proxy | req/s: direct | deja | LiteLLM proxy | CPU ms/req: deja | LiteLLM proxy |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, points in result["load"].items():
        for key, row in points.items():
            deja, peer = row["deja"], row["litellm_proxy"]
            out.append(f"| {'streaming' if mode == 'stream' else 'non-streaming'} | {key.removeprefix('c')} | "
                       f"{_p(deja['added_latency'], True)} | {_p(peer['added_latency'], True)} | "
                       f"{_p(deja.get('added_ttfc'), True)} | {_p(peer.get('added_ttfc'), True)} | "
                       f"{row['direct']['rps']:.0f} | {deja['rps']:.0f} | {peer['rps']:.0f} | "
                       f"{deja['cpu_ms_per_request']:.2f} | {peer['cpu_ms_per_request']:.2f} |")
    out += ["", "| | deja | LiteLLM proxy | direct |", "| --- | ---: | ---: | ---: |"]
    for mode, label in (("nonstream", "non-streaming"), ("stream", "streaming")):
        bound = result["rps_at_p99_50ms"][mode]
        out.append(f"| req/s at p99 ≤ {P99_BOUND_MS:.0f} ms, {label} | {_rps_cell(bound['deja'])} | "
                   f"{_rps_cell(bound['litellm_proxy'])} | {_rps_cell(bound['direct'])} |")
    peak = result["peak_rss_mib"]
    out.append(f"| peak resident memory, MiB (miss path) | {peak['deja']:.0f} | {peak['litellm_proxy']:.0f} | "
               f"{peak['direct']:.0f} (fake upstream) |")
    hits = result.get("cache_hits") or {}
    exact, semantic = hits.get("exact") or {}, hits.get("semantic") or {}
    for c in ("c1", "c32"):
        row = exact.get(c) or {}
        out.append(f"| exact hit p50 / p99, hits/s, concurrency {c.removeprefix('c')} | {_hit_cell(row.get('deja'))} | "
                   f"{_hit_cell(row.get('litellm_proxy'))} | |")
    for c in ("c1", "c32"):
        row = semantic.get(c) or {}
        out.append(f"| semantic hit p50 / p99, hits/s, concurrency {c.removeprefix('c')} | "
                   f"{_hit_cell(row.get('deja'))} | n/a (needs Redis Stack or Qdrant) | |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests per point (a smoke run)")
    parser.add_argument("--litellm-proxy", metavar="BIN", default=os.environ.get("LITELLM_PROXY_BIN"),
                        help="an installed `litellm` binary to use instead of .bench/litellm-proxy")
    args = parser.parse_args()
    result = run_and_save("peers", lambda: main_async(args), plot)
    print()
    print(markdown_table(result))


if __name__ == "__main__":
    main()
