"""Sustained usage-row write throughput through ``UsageWriter``, PostgreSQL and SQLite.

A producer on the event loop submits rows as fast as the writer keeps up (it yields whenever more than half
the memory queue is waiting, so nothing spills); the figure is rows / (time from the first submit until the
last row is committed). Rows carry real request/response bodies built from NQ-Open questions and passages
(``--data``), and are measured with bodies stored and with ``store_bodies=False``, across batch sizes.
Also reported: the cost of one ``submit`` call on the request path (p50/p99, microseconds).

Run: ``.venv/bin/python -m benchmarks.persistence [--quick] [--database-url URL] [--data DIR]``.
Writes ``benchmarks/results/persistence.json`` and ``persistence.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from router.storage import Storage, UsageFilter, UsageRecord, UsageWriter, open_storage

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_bodies(data_dir: Path, limit: int = 2000) -> list[tuple[str, str]]:
    path = data_dir / "nq-open-dev.jsonl.gz"
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            item = json.loads(line)
            request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": item["question"]}]}
            answer = {"choices": [{"message": {"role": "assistant", "content": item["passage"]}}]}
            pairs.append((json.dumps(request), json.dumps(answer)))
            if len(pairs) >= limit:
                break
    return pairs


def make_rows(n: int, bodies: list[tuple[str, str]], run: str) -> list[UsageRecord]:
    rng = random.Random(1)
    now = time.time()
    rows = []
    for i in range(n):
        req, resp = bodies[i % len(bodies)]
        rows.append(
            UsageRecord(
                request_id=f"{run}-{i:08d}", ts=now - rng.random() * 86_400 * 7, route="chat",
                key_id=f"key_{i % 20}", tenant=f"tenant-{i % 3}", end_user=None,
                model=rng.choice(("gpt-4o-mini", "claude-haiku", "llama-3")), deployment="d1",
                provider="openai",
                cache=rng.choice(("exact", "semantic", "miss")), similarity=None,
                prompt_tokens_client=rng.randint(10, 900), prompt_tokens_sent=rng.randint(10, 700),
                completion_tokens=rng.randint(0, 400), cost_usd=rng.random() / 1000, saved_cache_usd=0.0,
                saved_compression_usd=0.0, latency_ms=rng.uniform(20, 900), ttft_ms=None, status=200,
                error_type=None, stream=False, request_body=req, response_body=resp,
            )
        )  # fmt: skip
    return rows


async def sustained(storage: Storage, rows: list[UsageRecord], *, batch: int, bodies: bool) -> dict[str, Any]:
    writer = UsageWriter(
        storage, batch_size=batch, flush_interval=0.05, max_queue=20_000, store_bodies=bodies
    )
    await writer.start()
    submit_ns: list[int] = []
    start = time.perf_counter()
    for record in rows:
        while writer.depth > writer.max_queue // 2:
            await asyncio.sleep(0.001)
        t0 = time.perf_counter_ns()
        writer.submit(record)
        submit_ns.append(time.perf_counter_ns() - t0)
    while writer.depth:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - start
    await writer.close()
    if writer.written != len(rows) or writer.spilled or writer.dropped:
        raise RuntimeError(
            f"lost rows: written={writer.written} spilled={writer.spilled} dropped={writer.dropped}"
        )
    submit_ns.sort()
    return {
        "rows": len(rows),
        "batch_size": batch,
        "bodies": bodies,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(len(rows) / elapsed),
        "submit_p50_us": round(submit_ns[len(submit_ns) // 2] / 1000, 2),
        "submit_p99_us": round(submit_ns[int(len(submit_ns) * 0.99)] / 1000, 2),
    }


async def run_backend(
    url: str, schema: str | None, rows_n: int, batches: list[int], data: list
) -> list[dict]:
    results = []
    for bodies in (True, False):
        for batch in batches:
            storage = open_storage(url, schema=schema)
            await storage.connect()
            await storage.migrate()
            rows = make_rows(rows_n, data, uuid.uuid4().hex[:8])
            result = await sustained(storage, rows, batch=batch, bodies=bodies)
            summary = await storage.usage_summary(UsageFilter(), None)
            result["rollup_requests_after"] = summary[0]["requests"]
            await storage.close()
            rate = result["rows_per_s"]
            print(f"  {storage.backend:10s} batch={batch:5d} bodies={bodies!s:5s} {rate:>8,} rows/s")
            results.append(result)
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data = load_bodies(Path(args.data))
    rows_n = 5_000 if args.quick else 40_000
    batches = [100, 500] if args.quick else [100, 500, 2000]
    out: dict[str, Any] = {
        "benchmark": "persistence",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "rows_per_run": rows_n,
        "note": "rows/s = rows / (first submit .. last commit); producer and writer share one event loop",
        "backends": {},
    }
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        print("postgresql")
        out["backends"]["postgresql"] = await run_backend(args.database_url, schema, rows_n, batches, data)
    finally:
        conn = await asyncpg.connect(args.database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite")
        out["backends"]["sqlite"] = await run_backend(
            f"sqlite:///{tmp}/bench.db", None, rows_n, batches, data
        )
    return out


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, bodies in zip(axes, (True, False), strict=True):
        for offset, (backend, runs) in enumerate(out["backends"].items()):
            sel = [r for r in runs if r["bodies"] is bodies]
            xs = [i + offset * 0.4 for i in range(len(sel))]
            ax.bar(xs, [r["rows_per_s"] for r in sel], width=0.4, label=backend)
            ax.set_xticks([i + 0.2 for i in range(len(sel))], [str(r["batch_size"]) for r in sel])
        ax.set_title(f"bodies {'stored' if bodies else 'off'}")
        ax.set_xlabel("batch size")
    axes[0].set_ylabel("sustained rows / s")
    axes[0].legend()
    fig.suptitle(f"UsageWriter throughput ({out['rows_per_run']:,} rows per run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and batch sizes")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="directory holding nq-open-dev.jsonl.gz")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "persistence.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS / "persistence.png")
    print(f"wrote {RESULTS / 'persistence.json'} and persistence.png")


if __name__ == "__main__":
    main()
