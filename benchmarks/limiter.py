"""Limiter cost and shared-limit accuracy.

- Cost: wall time of one ``admit`` + ``settle`` pair (p50, p99) for ``MemoryLimiter`` and ``RedisLimiter``
  (a key with RPM, TPM and a budget, so every structure is touched), plus a key without limits.
- Accuracy: 3 ``RedisLimiter`` instances (separate connection pools, as replicas) receive 200 concurrent
  requests against a limit of 50 requests (and, separately, 50 requests' worth of tokens); admitted / limit
  should be exactly 1.00 in every trial.

Run: ``.venv/bin/python -m benchmarks.limiter [--quick] [--redis-url URL]``.
Writes ``benchmarks/results/limiter.json`` and ``limiter.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from router.auth.keys import Limits
from router.limits.memory import Limiter, MemoryLimiter
from router.limits.redis_limiter import RedisLimiter

RESULTS = Path(__file__).resolve().parent / "results"
FULL_LIMITS = Limits(rpm=10**9, tpm=10**12, budget_usd=1e12, budget_period="daily")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_cost(limiter: Limiter, limits: Limits, iterations: int) -> dict[str, float]:
    key = f"bench-{uuid.uuid4().hex[:8]}"
    for _ in range(min(50, iterations)):  # warm-up: connections, script load, spend seeding
        decision = await limiter.admit(key, limits, estimated_tokens=500)
        await limiter.settle(key, limits, decision, actual_tokens=300, cost_usd=0.0001)
    samples: list[float] = []
    for _ in range(iterations):
        start = time.perf_counter()
        decision = await limiter.admit(key, limits, estimated_tokens=500)
        await limiter.settle(key, limits, decision, actual_tokens=300, cost_usd=0.0001)
        samples.append((time.perf_counter() - start) * 1e6)
        if not decision.allowed:
            raise RuntimeError(f"benchmark key unexpectedly limited: {decision}")
    return {
        "iterations": iterations,
        "p50_us": round(percentile(samples, 0.50), 1),
        "p99_us": round(percentile(samples, 0.99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
    }


async def measure_accuracy(redis_url: str, prefix: str, trials: int, kind: str) -> list[float]:
    limiters = [RedisLimiter(redis_url, prefix=prefix) for _ in range(3)]
    limits = Limits(rpm=50) if kind == "requests" else Limits(tpm=50 * 100)
    ratios: list[float] = []
    try:
        for trial in range(trials):
            key = f"acc-{kind}-{trial}"
            decisions = await asyncio.gather(
                *(limiters[i % 3].admit(key, limits, estimated_tokens=100) for i in range(200))
            )
            errors = [d for d in decisions if d.limit == "unavailable"]
            if errors:
                raise RuntimeError(f"Redis unavailable during the accuracy run ({len(errors)} failures)")
            ratios.append(sum(d.allowed for d in decisions) / 50)
    finally:
        for limiter in limiters:
            await limiter.close()
    return ratios


async def cleanup(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def run(redis_url: str, quick: bool) -> dict[str, Any]:
    iterations, trials = (500, 3) if quick else (5000, 20)
    prefix = f"dejabench:{uuid.uuid4().hex[:8]}:"
    cost: dict[str, dict[str, float]] = {}
    memory = MemoryLimiter()
    cost["memory"] = await measure_cost(memory, FULL_LIMITS, iterations)
    cost["memory (no limits)"] = await measure_cost(memory, Limits(), iterations)
    redis_limiter = RedisLimiter(redis_url, prefix=prefix)
    try:
        cost["redis"] = await measure_cost(redis_limiter, FULL_LIMITS, iterations)
        cost["redis rpm only"] = await measure_cost(redis_limiter, Limits(rpm=10**9), iterations)
        cost["redis (no limits)"] = await measure_cost(redis_limiter, Limits(), iterations)
    finally:
        await redis_limiter.close()
    try:
        accuracy = {
            kind: await measure_accuracy(redis_url, prefix, trials, kind) for kind in ("requests", "tokens")
        }
    finally:
        await cleanup(redis_url, prefix)
    return {
        "benchmark": "limiter",
        "quick": quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "cost_admit_plus_settle": cost,
        "accuracy": {
            "setup": "3 RedisLimiter instances (own pools), 200 concurrent admits, limit 50 (target 1.00)",
            **{
                kind: {"trials": len(r), "min": min(r), "max": max(r), "mean": round(statistics.fmean(r), 4)}
                for kind, r in accuracy.items()
            },
            "ratios": accuracy,
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = result["cost_admit_plus_settle"]
    names = list(cost)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(len(names))
    left.bar([x - 0.2 for x in xs], [cost[n]["p50_us"] for n in names], width=0.4, label="p50")
    left.bar([x + 0.2 for x in xs], [cost[n]["p99_us"] for n in names], width=0.4, label="p99")
    left.set_xticks(list(xs), names, rotation=20, ha="right")
    left.set_yscale("log")
    left.set_ylabel("admit + settle (µs, log)")
    left.set_title("Limiter cost per request")
    left.legend()
    for kind, marker, shift in (("requests", "o", -0.15), ("tokens", "s", 0.15)):
        ratios = result["accuracy"]["ratios"][kind]
        right.plot(
            [i + 1 + shift for i in range(len(ratios))], ratios, marker=marker, linestyle="", label=kind
        )
    right.xaxis.get_major_locator().set_params(integer=True)
    right.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    right.set_ylim(0.8, 1.2)
    right.set_xlabel("trial")
    right.set_ylabel("admitted / limit")
    right.set_title("3 replicas, 200 concurrent, limit 50")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args.redis_url, args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "limiter.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "limiter.png")
    print(json.dumps({k: result[k] for k in ("cost_admit_plus_settle",)}, indent=2))
    print(json.dumps({k: v for k, v in result["accuracy"].items() if k != "ratios"}, indent=2))


if __name__ == "__main__":
    main()
