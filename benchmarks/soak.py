"""Soak: one deja process under mixed traffic for a while; does its memory settle, does anything fail?

Set-up: one fake upstream (20 ms before the first byte, 10 ms between stream chunks, so a stream is still running
when a client goes away) and one deja with a master key and no Redis: in-memory cache (semantic tier on, capacity
bounded) and in-memory limits, SQLite usage storage in a temporary directory. Two virtual keys are created through
the admin API: ``soak-main`` (no limits) for the traffic, ``soak-limited`` (a low rpm) for the class that is meant
to be refused. Before the clock starts the cache is filled to its capacity with unique answers, the exact-hit pool
is stored, and the Quora ``text_a`` questions are stored and their ``text_b`` paraphrases tried once: those served
``hit-semantic`` make the semantic pool (so the semantic class keeps hitting); a full cache means that growth after
warm-up is not the cache filling up.

Traffic, for ``--minutes`` (default 10; ``--quick``: 1), from ``--concurrency`` workers (default 16), each request
of a class drawn at random with fixed weights:

- ``exact``: a prompt of the stored pool (non-streaming), expected ``hit-exact``;
- ``semantic``: a stored question's paraphrase, expected ``hit-semantic``;
- ``miss``: a unique prompt (non-streaming);
- ``stream``: streamed, half unique prompts, half from the exact pool (a replayed stream), read to ``[DONE]``;
- ``disconnect``: a unique prompt streamed, the connection closed after the first content chunk;
- ``limited`` (its own paced task, twice the key's rpm): expected 200 or 429.

Every ``--interval`` seconds deja's resident memory (``VmRSS`` of ``/proc/<pid>/status``) and open descriptors are
sampled. **RSS growth** = mean RSS of the last 10% of the run / mean RSS of the 10% that follows a warm-up of the
first 20% of the run − 1; target < 5%. **Unexpected failures** = any status other than 200 (other than 429 on the
``limited`` class), any exception, any in-band stream error or stream without ``[DONE]``, on every class but
``disconnect`` (whose closing is on purpose; a non-200 status there still counts); target 0. The script exits 0
either way and prints PASS / FAIL per target. Writes ``benchmarks/results/soak.json`` and ``soak.png``.

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--quick]      # or: make soak [MINUTES=30] [QUICK=1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.procs import memory_kib, run_and_save, start_deja, start_upstream, stop

MASTER_KEY = "sk-soak-master-0123456789"
WEIGHTS = {"exact": 0.30, "semantic": 0.20, "miss": 0.20, "stream": 0.18, "disconnect": 0.12}
LIMITED_RPM = 30
WARMUP_SHARE, WINDOW_SHARE, GROWTH_TARGET = 0.20, 0.10, 0.05
UPSTREAM_DELAY, UPSTREAM_CHUNK_DELAY = 0.02, 0.01
EXACT_POOL = 200


def window_mean(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Mean value of the ``(t, value)`` samples with ``start <= t <= end``; None when there are none."""
    values = [v for t, v in samples if start <= t <= end]
    return statistics.fmean(values) if values else None


def rss_growth(samples: list[tuple[float, float]], duration: float, warmup: float = WARMUP_SHARE,
               window: float = WINDOW_SHARE) -> dict[str, float | None]:
    """Growth of ``(t seconds, RSS)`` samples over a run of ``duration`` seconds: the mean of the last ``window``
    share against the mean of the ``window`` share right after the ``warmup`` share; ``growth`` is end/base − 1."""
    base = window_mean(samples, warmup * duration, (warmup + window) * duration)
    end = window_mean(samples, (1 - window) * duration, duration)
    growth = end / base - 1 if base and end is not None else None
    return {"baseline": base, "end": end, "growth": growth}


def slope_per_minute(samples: list[tuple[float, float]], after: float) -> float | None:
    """Least-squares slope (value per minute) of the samples taken after ``after`` seconds."""
    points = [(t, v) for t, v in samples if t >= after]
    if len(points) < 3:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else None


def summarise_log(lines: list[str]) -> dict[str, Any]:
    """deja's log (JSON lines, or text): warnings and errors grouped by level, message and the exception's last
    line, with counts."""
    groups: Counter[str] = Counter()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = str(record.get("level", "")).lower()
            if level not in {"warning", "error", "critical"}:
                continue
            exc = str(record.get("exc") or "").strip().splitlines()
            groups[f"{level}: {record.get('message', '')}" + (f" ({exc[-1]})" if exc else "")] += 1
        elif any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback")):
            groups[line.strip()[:300]] += 1
    return {"lines": len(lines), "warnings_and_errors": sum(groups.values()), "by_kind": dict(groups.most_common())}


@dataclass
class Tally:
    """Outcomes per traffic class, and the failures nobody asked for."""

    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: int = 0
    examples: list[str] = field(default_factory=list)
    done: int = 0

    def ok(self, kind: str, outcome: str) -> None:
        self.outcomes[kind][outcome] += 1
        self.done += 1

    def fail(self, kind: str, outcome: str, detail: str) -> None:
        self.outcomes[kind][outcome] += 1
        self.done += 1
        self.failures += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {outcome}: {detail[:300]}")


async def call(session: aiohttp.ClientSession, url: str, kind: str, body: dict[str, Any], headers: dict[str, str],
               tally: Tally) -> None:
    """One request of class ``kind``; its outcome goes to ``tally``."""
    try:
        async with session.post(url, json=body, headers=headers) as r:
            cache = r.headers.get("X-Deja-Cache", "-")
            if r.status == 429 and kind == "limited":
                await r.read()
                tally.ok(kind, "429")
                return
            if r.status != 200:
                tally.fail(kind, f"http {r.status}", await r.text())
                return
            if not body.get("stream"):
                data = await r.json()
                if not data.get("choices"):
                    tally.fail(kind, "no choices", json.dumps(data))
                    return
                tally.ok(kind, f"200 {cache}")
                return
            events = 0
            done = False
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b'data: {"error"'):
                    tally.fail(kind, "in-band error", line.decode(errors="replace"))
                    return
                events += 1
                done = line.strip() == b"data: [DONE]"
                if kind == "disconnect" and events == 2:  # the role chunk, then the first content chunk
                    r.close()
                    tally.ok(kind, f"closed mid-stream {cache}")
                    return
            if done:
                tally.ok(kind, f"200 stream {cache}")
            elif kind == "disconnect":
                tally.ok(kind, f"stream ended before closing {cache}")
            else:
                tally.fail(kind, "stream without [DONE]", f"{events} events")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        if kind == "disconnect":
            tally.ok(kind, f"exception {type(exc).__name__}")
        else:
            tally.fail(kind, f"exception {type(exc).__name__}", str(exc))


def chat(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "bench", "stream": stream, "messages": [{"role": "user", "content": text}]}


async def ask_many(session: aiohttp.ClientSession, url: str, bodies: list[dict[str, Any]], headers: dict[str, str],
                   concurrency: int = 32) -> list[tuple[int, str]]:
    """Set-up requests: (status, X-Deja-Cache) per body, in order."""
    out: list[tuple[int, str]] = [(0, "")] * len(bodies)
    todo = iter(range(len(bodies)))

    async def worker() -> None:
        for i in todo:
            async with session.post(url, json=bodies[i], headers=headers) as r:
                await r.read()
                out[i] = (r.status, r.headers.get("X-Deja-Cache", ""))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def create_key(session: aiohttp.ClientSession, base: str, spec: dict[str, Any]) -> str:
    async with session.post(base + "/admin/keys", json=spec,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
        data = await r.json()
        if r.status != 201:
            raise RuntimeError(f"creating a key failed: {r.status} {data}")
        return str(data["key"])


@dataclass
class Plan:
    exact: list[str]
    semantic: list[str]
    setup: dict[str, Any]


async def prepare(session: aiohttp.ClientSession, base: str, headers: dict[str, str], capacity: int,
                  semantic_pairs: int, tag: str) -> Plan:
    from benchmarks.qqp import load_pairs

    chat_url = base + "/v1/chat/completions"
    started = time.monotonic()
    fill = await ask_many(session, chat_url, [chat(f"soak {tag} prefill {i}: tell me about {i}")
                                              for i in range(capacity)], headers)
    exact = [f"soak {tag} exact {j}: what is the capital of country number {j}?" for j in range(EXACT_POOL)]
    seeded = await ask_many(session, chat_url, [chat(t) for t in exact], headers)
    seen: set[str] = set()
    pairs = []
    for p in load_pairs():
        if p.label == 1 and p.text_a != p.text_b and p.text_a not in seen and p.text_b not in seen:
            seen.update((p.text_a, p.text_b))
            pairs.append(p)
        if len(pairs) == semantic_pairs:
            break
    stored = await ask_many(session, chat_url, [chat(p.text_a) for p in pairs], headers)
    await asyncio.sleep(1.5)  # stores happen after the answers
    tried = await ask_many(session, chat_url, [chat(p.text_b) for p in pairs], headers)
    semantic = [p.text_b for p, (_, cache) in zip(pairs, tried, strict=True) if cache == "hit-semantic"]
    bad = [s for s, _ in fill + seeded + stored + tried if s != 200]
    if bad:
        raise RuntimeError(f"set-up requests failed: {Counter(bad)}")
    return Plan(exact, semantic, {
        "prefill_unique_answers": capacity, "exact_pool": len(exact), "semantic_pairs_tried": len(pairs),
        "semantic_pool_served_hit_semantic": len(semantic), "setup_seconds": time.monotonic() - started})


async def sampler(pid: int, started: float, interval: float, stop_at: asyncio.Event, tally: Tally,
                  rows: list[dict[str, float]]) -> None:
    while True:
        fds = len(os.listdir(f"/proc/{pid}/fd")) if os.path.exists(f"/proc/{pid}/fd") else 0
        rows.append({"t": time.monotonic() - started, "rss_mib": memory_kib(pid, "VmRSS") / 1024, "fds": fds,
                     "requests_done": tally.done})
        if stop_at.is_set():
            return
        try:
            await asyncio.wait_for(stop_at.wait(), interval)
        except TimeoutError:
            pass


async def traffic(base: str, key: str, limited_key: str, plan: Plan, duration: float, concurrency: int,
                  tally: Tally, seed: int = 7) -> None:
    chat_url = base + "/v1/chat/completions"
    rng = random.Random(seed)
    counter = iter(range(10**12))
    tag = time.time_ns()
    deadline = time.monotonic() + duration
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    main_headers = {"Authorization": f"Bearer {key}"}
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "exact": lambda: chat(rng.choice(plan.exact)),
        "semantic": lambda: chat(rng.choice(plan.semantic or plan.exact)),
        "miss": lambda: chat(f"soak {tag} miss {next(counter)}: what is {rng.random()}?"),
        "stream": lambda: chat(rng.choice(plan.exact) if rng.random() < 0.5
                               else f"soak {tag} stream {next(counter)}: describe {rng.random()}", stream=True),
        "disconnect": lambda: chat(f"soak {tag} cut {next(counter)}: list the numbers up to {rng.random()}",
                                   stream=True),
    }
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 4),
                                     timeout=timeout) as session:
        async def worker() -> None:
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                await call(session, chat_url, kind, makers[kind](), main_headers, tally)

        async def limited() -> None:
            period = 60 / (2 * LIMITED_RPM)
            headers = {"Authorization": f"Bearer {limited_key}"}
            next_at = time.monotonic()
            while next_at < deadline:
                await call(session, chat_url, "limited", chat(f"soak {tag} limited {next(counter)}"), headers, tally)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.gather(limited(), *(worker() for _ in range(concurrency)))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    duration = 60.0 * (1 if args.quick and args.minutes is None else (args.minutes or 10))
    capacity = args.capacity or (1500 if args.quick else 5000)
    semantic_pairs = 300 if args.quick else 1500
    interval = args.interval or max(1.0, duration / 300)
    deja_section = {"master_key": MASTER_KEY, "limits": {"backend": "memory"},
                    "cache": {"backend": "memory", "semantic": True, "capacity": capacity}}
    work = Path(tempfile.mkdtemp(prefix="deja-soak-"))
    procs: list[Any] = []
    tally = Tally()
    rows: list[dict[str, float]] = []
    try:
        upstream, up_port = start_upstream(UPSTREAM_DELAY, UPSTREAM_CHUNK_DELAY)
        procs.append(upstream)
        deja, port = start_deja(work / "deja", up_port, deja_section)
        procs.append(deja)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            key = await create_key(session, base, {"name": "soak-main", "tenant": "soak"})
            limited_key = await create_key(session, base, {"name": "soak-limited", "tenant": "soak",
                                                           "rpm": LIMITED_RPM})
            plan = await prepare(session, base, {"Authorization": f"Bearer {key}"}, capacity, semantic_pairs,
                                 str(time.time_ns()))
        print(f"set-up done: {json.dumps(plan.setup)}", flush=True)
        print(f"soak: {duration / 60:.1f} min, {args.concurrency} workers, sampling every {interval:.1f} s",
              flush=True)
        started = time.monotonic()
        stop_sampling = asyncio.Event()
        sampling = asyncio.create_task(sampler(deja.pid, started, interval, stop_sampling, tally, rows))
        await traffic(base, key, limited_key, plan, duration, args.concurrency, tally)
        elapsed = time.monotonic() - started
        stop_sampling.set()
        await sampling
        alive = deja.poll() is None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(base + "/health/live") as r:
                live = r.status == 200
            async with session.get(base + "/admin/cache/stats",
                                   headers={"Authorization": f"Bearer {MASTER_KEY}"}) as r:
                cache_stats = await r.json() if r.status == 200 else {"status": r.status}
        peak = memory_kib(deja.pid, "VmHWM") / 1024
    finally:
        for proc in reversed(procs):
            stop(proc)
    log = (work / "deja" / "deja.log").read_text(errors="replace").splitlines()
    shutil.rmtree(work, ignore_errors=True)
    samples = [(row["t"], row["rss_mib"]) for row in rows]
    growth = rss_growth(samples, elapsed)
    failures_ok = tally.failures == 0 and alive and live
    growth_ok = growth["growth"] is not None and growth["growth"] < GROWTH_TARGET
    limited_counts = tally.outcomes.get("limited", Counter())
    return {
        "benchmark": "soak", "quick": args.quick, "duration_s": elapsed, "concurrency": args.concurrency,
        "config": {"deja": {k: v for k, v in deja_section.items() if k != "master_key"},
                   "storage": "SQLite in a temporary directory", "redis": None, "class_weights": WEIGHTS,
                   "limited_key_rpm": LIMITED_RPM, "limited_rate_per_min": 2 * LIMITED_RPM,
                   "upstream": {"delay_s": UPSTREAM_DELAY, "chunk_delay_s": UPSTREAM_CHUNK_DELAY},
                   "sample_interval_s": interval},
        "setup": plan.setup,
        "requests": tally.done, "requests_per_s": tally.done / elapsed if elapsed else 0.0,
        "traffic": {kind: dict(counts.most_common()) for kind, counts in sorted(tally.outcomes.items())},
        "rss": {"definition": f"growth = mean VmRSS over the last {WINDOW_SHARE:.0%} of the run / mean VmRSS over "
                              f"the {WINDOW_SHARE:.0%} after a warm-up of the first {WARMUP_SHARE:.0%} − 1",
                "baseline_mib": growth["baseline"], "end_mib": growth["end"], "growth": growth["growth"],
                "slope_mib_per_min_after_warmup": slope_per_minute(samples, WARMUP_SHARE * elapsed),
                "peak_mib": peak, "samples": rows},
        "unexpected_failures": {"count": tally.failures, "examples": tally.examples,
                                "deja_alive_at_end": alive, "health_live_at_end": live},
        "rate_limit_exercised": limited_counts.get("429", 0) > 0,
        "cache_stats_at_end": cache_stats,
        "deja_log": summarise_log(log),
        "targets": {
            "rss_growth_below_5pct": {"value": growth["growth"], "pass": growth_ok},
            "unexpected_failures_zero": {"value": tally.failures, "pass": failures_ok}},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rss"]["samples"]
    duration = result["duration_s"]
    minutes = [row["t"] / 60 for row in rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(2, 1))
    ax.plot(minutes, [row["rss_mib"] for row in rows], color="tab:blue", label="deja VmRSS")
    ax.axvspan(0, WARMUP_SHARE * duration / 60, color="tab:gray", alpha=0.15, label="warm-up")
    rss = result["rss"]
    for value, start, label in ((rss["baseline_mib"], WARMUP_SHARE, "baseline window mean"),
                                (rss["end_mib"], 1 - WINDOW_SHARE, "end window mean")):
        if value is not None:
            lo = start * duration / 60
            ax.hlines(value, lo, lo + WINDOW_SHARE * duration / 60, colors="tab:red", linewidth=2.5,
                      label=f"{label}: {value:.1f} MiB")
    growth = rss["growth"]
    ax.set_title(f"deja resident memory under mixed traffic: growth after warm-up "
                 f"{'n/a' if growth is None else f'{growth:+.1%}'} (target < {GROWTH_TARGET:.0%}); "
                 f"unexpected failures {result['unexpected_failures']['count']}", fontsize=10)
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    rates = [0.0] + [(b["requests_done"] - a["requests_done"]) / max(1e-9, b["t"] - a["t"])
                     for a, b in zip(rows, rows[1:], strict=False)]
    ax2.plot(minutes, rates, color="tab:green")
    ax2.set_ylabel("requests/s")
    ax2.set_xlabel("minutes")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def report(result: dict[str, Any]) -> str:
    lines = [f"soak: {result['duration_s'] / 60:.1f} min, {result['requests']} requests "
             f"({result['requests_per_s']:.0f}/s), concurrency {result['concurrency']}"]
    for kind, counts in result["traffic"].items():
        lines.append(f"  {kind:10} " + ", ".join(f"{outcome}: {n}" for outcome, n in counts.items()))
    rss = result["rss"]
    if rss["growth"] is not None:
        lines.append(f"  RSS: baseline {rss['baseline_mib']:.1f} MiB, end {rss['end_mib']:.1f} MiB, "
                     f"peak {rss['peak_mib']:.1f} MiB")
    failures = result["unexpected_failures"]
    for example in failures["examples"][:5]:
        lines.append(f"  failure: {example}")
    for kind, n in result["deja_log"]["by_kind"].items():
        lines.append(f"  deja log: {n} x {kind}")
    if not result["rate_limit_exercised"]:
        lines.append("  note: the limited key never got a 429")
    growth = result["targets"]["rss_growth_below_5pct"]
    value = "n/a" if growth["value"] is None else f"{growth['value']:+.2%}"
    lines.append(f"{'PASS' if growth['pass'] else 'FAIL'}  RSS growth after warm-up {value} "
                 f"(target < {GROWTH_TARGET:.0%})")
    fail = result["targets"]["unexpected_failures_zero"]
    lines.append(f"{'PASS' if fail['pass'] else 'FAIL'}  unexpected failures {fail['value']} (target 0; deja alive "
                 f"at the end: {failures['deja_alive_at_end'] and failures['health_live_at_end']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, help="how long the traffic runs (default 10; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="1 minute, a smaller cache and semantic pool")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--capacity", type=int, help="deja's cache.capacity (default 5000; --quick: 1500)")
    parser.add_argument("--interval", type=float, help="seconds between RSS samples (default: duration / 300, "
                                                       "at least 1)")
    args = parser.parse_args()
    result = run_and_save("soak", lambda: main_async(args), plot)
    print(report(result))


if __name__ == "__main__":
    main()
