"""What deja adds to a request: the same requests sent to the fake upstream directly and through deja.

Measures, at concurrency 1 and 32: non-streaming total latency and streaming time to first chunk (p50/p99, and
the difference = added latency), requests per second; the same with usage persistence off (in the same run);
and exact / semantic cache-hit latency through HTTP. Every server runs in its own process, as in production.
Writes ``benchmarks/results/overhead.json`` and ``overhead.png``.

    .venv/bin/python -m benchmarks.overhead [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.procs import start_deja, start_litellm_proxy, start_upstream, stop

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    """Seconds to the full answer (non-streaming) or to the first data event (streaming)."""
    start = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        if body.get("stream"):
            async for line in r.content:
                if line.startswith(b"data: "):
                    elapsed = time.perf_counter() - start
                    await r.read()
                    return elapsed
        await r.read()
    return time.perf_counter() - start


async def load(url: str, body: dict[str, Any], headers: dict[str, str], n: int, concurrency: int,
               vary: bool) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            for i in counter:
                b = body
                if vary:
                    b = {**body, "messages": [{"role": "user", "content": f"question {i} {time.time_ns()}"}]}
                latencies.append(await one(session, url, b, headers))

        await one(session, url, body, headers)  # warm up the connection
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, n / wall


def summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000}


async def proxy_overhead(direct: str, targets: dict[str, str], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    no_store = {"Cache-Control": "no-store"}
    for stream in (False, True):
        for concurrency in (1, 32):
            key = f"{'stream_ttfc' if stream else 'nonstream_total'}_c{concurrency}"
            body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            base_lat, base_rps = await load(direct + "/chat/completions", body, {}, n, concurrency, True)
            row: dict[str, Any] = {"direct": {**summary(base_lat), "rps": base_rps}}
            for name, url in targets.items():
                lat, rps = await load(url + "/chat/completions", {**body, "model": "bench"}, no_store, n,
                                      concurrency, True)
                s = summary(lat)
                row[name] = {**s, "rps": rps, "added_p50_ms": s["p50_ms"] - row["direct"]["p50_ms"],
                             "added_p99_ms": s["p99_ms"] - row["direct"]["p99_ms"]}
            out[key] = row
            print(key, json.dumps({k: {m: round(v, 2) for m, v in r.items()} for k, r in row.items()}))
    return out


async def timed(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, str]:
    start = time.perf_counter()
    async with session.post(url, json=body) as r:
        await r.read()
        return time.perf_counter() - start, r.headers.get("X-Deja-Cache", "")


async def cache_hits(url: str, n: int) -> dict[str, Any]:
    """Hit latency through HTTP: seed ``text_a`` of held-out QQP duplicates, then ask the same (exact hits) and
    ``text_b`` (a fresh paraphrase each: only the answers served ``hit-semantic`` count as semantic hits)."""
    from benchmarks.qqp import load_split

    pairs = [p for p in load_split("test") if p.label == 1][:n]
    chat = url + "/chat/completions"

    def ask(text: str) -> dict[str, Any]:
        return {"model": "bench", "messages": [{"role": "user", "content": text}]}

    async with aiohttp.ClientSession() as session:
        for pair in pairs:
            await timed(session, chat, ask(pair.text_a))
        await asyncio.sleep(1.0)  # stores happen after the answers
        exact = [await timed(session, chat, ask(pair.text_a)) for pair in pairs]
        semantic = [await timed(session, chat, ask(pair.text_b)) for pair in pairs]
    kinds = {kind: sum(1 for _, k in semantic if k == kind) for kind in {k for _, k in semantic}}
    return {"exact_hit": summary([t for t, k in exact if k == "hit-exact"]),
            "semantic_hit": summary([t for t, k in semantic if k == "hit-semantic"]) if kinds.get("hit-semantic")
            else None,
            "semantic_miss": summary([t for t, k in semantic if k == "miss"]) if kinds.get("miss") else None,
            "paraphrase_queries": len(semantic), "paraphrase_results": kinds}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n = 60 if args.quick else 400
    upstream, up_port = start_upstream()
    work = Path(tempfile.mkdtemp(prefix="deja-bench-"))
    procs = [upstream]
    try:
        deja, port = start_deja(work / "on", up_port, {"cache": {"semantic": False}})
        procs.append(deja)
        deja_off, port_off = start_deja(work / "off", up_port, {"cache": {"semantic": False},
                                                                "usage": {"enabled": False}})
        procs.append(deja_off)
        targets = {"deja": f"http://127.0.0.1:{port}/v1", "deja_no_persistence": f"http://127.0.0.1:{port_off}/v1"}
        if args.litellm_proxy:
            proxy, proxy_port = start_litellm_proxy(args.litellm_proxy, work / "litellm", up_port)
            procs.append(proxy)
            targets["litellm_proxy"] = f"http://127.0.0.1:{proxy_port}/v1"
        overhead = await proxy_overhead(f"http://127.0.0.1:{up_port}/v1", targets, n)
        for p in procs[1:]:
            stop(p)
        procs = procs[:1]
        cached, cached_port = start_deja(work / "cache", up_port, {})
        procs.append(cached)
        hits = await cache_hits(f"http://127.0.0.1:{cached_port}/v1", 60 if args.quick else 400)
        print("cache", json.dumps(hits))
    finally:
        for p in procs:
            stop(p)
    return {"requests_per_point": n, "overhead": overhead, "cache_hits_http": hits}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(result["overhead"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [n for n in ("direct", "deja", "deja_no_persistence", "litellm_proxy") if n in result["overhead"][keys[0]]]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar([k + (i - (len(names) - 1) / 2) * width for k in range(len(keys))],
               [result["overhead"][k][name]["p50_ms"] for k in keys], width, label=name)
    ax.set_xticks(range(len(keys)), keys, rotation=15)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("p50 latency: direct to the upstream vs through a proxy (fake OpenAI, separate processes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--litellm-proxy", metavar="BIN", default=os.environ.get("LITELLM_PROXY_BIN"),
                        help="also measure LiteLLM's proxy (its `litellm` binary; env LITELLM_PROXY_BIN)")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / "overhead.png")


if __name__ == "__main__":
    main()
