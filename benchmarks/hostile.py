"""Hostile clients: can one request stall everyone, does a burst of large prompts keep its memory?

Set-up: a fake upstream in its own process answering every request with one short sentence (a 1 MB prompt is
not echoed back), and ``deja serve`` in its own process (semantic cache on, SQLite usage storage, no master
key), the code under test taken from ``--deja-root`` (default: this checkout; point it at a checkout of an
older commit to measure the *before*).

- **stall**: the semantic tier's worst case. For each size, a prompt ``"w " * n`` is answered (and stored),
  then the same plus ``" extra"``: a near-duplicate, so the embedding index offers the stored one to the
  verifier. Meanwhile ``/health/live`` is polled every 20 ms: the *stall* is its slowest answer while the
  second request runs (an event loop blocked by CPU work answers nothing). A request that takes longer than
  ``--timeout`` is counted as timed out; deja is then sent SIGTERM and we record whether it stopped within
  its drain timeout (30 s), before a fresh one is started.
- **verifier**: the semantic cache's verifier alone (in a process of the code under test), on the worst pairs
  a client can make of texts inside the semantic tier: repetitive (``"w0 " * n`` vs the same plus a word) and
  diverse (random words), 1,000 to 8,000 characters; the slowest of 3 runs each.
- **burst**: ``--streams`` (64) concurrent streamed requests, each a distinct 1 MB prompt. Resident memory
  (``VmRSS``) is sampled every 100 ms before, during and for ``--settle`` seconds after; meanwhile one client
  sends small requests back to back, alternating an exact cache hit and a ``Cache-Control: no-store`` miss, and
  their latencies are recorded (p50, p99, max per kind).

    .venv/bin/python -m benchmarks.hostile [--quick] [--label after] [--deja-root PATH] [--name hostile]
                                           [--only stall,verifier,burst]

Writes ``benchmarks/results/<name>.json`` and ``.png``; when ``results/hostile_before.json`` exists (a run with
``--name hostile_before`` against the older code), its figures are included and plotted side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.procs import RESULTS, free_port, memory_kib, run_and_save, stop, wait_port

MB = 1 << 20
_UPSTREAM = """
import asyncio, sys
from providers.fake_openai import Behaviour, FakeOpenAI
async def run():
    fake = await FakeOpenAI(default=Behaviour(content="Noted, thank you.")).start(int(sys.argv[1]))
    while True:  # forget the bodies received: 64 MB of prompts would otherwise stay in the fake
        fake.received.clear()
        await asyncio.sleep(0.5)
asyncio.run(run())
"""


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEJA_")}
    env.update({"PYTHONPATH": str(root), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def start_upstream(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _UPSTREAM, str(port)], env=_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def start_deja(root: Path, workdir: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "x"}}],
        "router_settings": {"num_retries": 0},
        "deja": {"database_url": f"sqlite:///{workdir}/deja.db", "log_level": "warning",
                 "max_body_bytes": 8 * MB}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "router.cli.main", "serve", "--config", str(path), "--port",
                             str(port)], env=_env(root), cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "deja.log", "ab"))
    wait_port(port, proc)
    return proc, port


def _body(text: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": "bench", "messages": [{"role": "user", "content": text}], "temperature": 0, "stream": stream}


async def _post(session: aiohttp.ClientSession, port: int, text: str, *, stream: bool = False,
                headers: dict[str, str] | None = None, timeout: float = 600) -> tuple[int, str, float]:
    """(status, X-Deja-Cache, seconds) of one chat request, read to its end."""
    started = time.perf_counter()
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=_body(text, stream=stream),
                            headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        await r.read()
        return r.status, r.headers.get("X-Deja-Cache", "-"), time.perf_counter() - started


async def _entries(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/status.json") as r:
        return int((await r.json()).get("cache_entries") or 0)


async def _stored(session: aiohttp.ClientSession, port: int, before: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await _entries(session, port) <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _poll_health(session: aiohttp.ClientSession, port: int, stop_at: asyncio.Event,
                       samples: list[float]) -> None:
    while not stop_at.is_set():
        started = time.perf_counter()
        try:
            async with session.get(f"http://127.0.0.1:{port}/health/live",
                                   timeout=aiohttp.ClientTimeout(total=900)) as r:
                await r.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)


def _sigterm_stops(proc: subprocess.Popen[bytes], drain: float = 30.0) -> float | None:
    """Seconds SIGTERM took to stop deja, or None when it did not stop within ``drain`` + 5 s (killed)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=drain + 5)
        return round(time.monotonic() - started, 2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


async def _stall_case(session: aiohttp.ClientSession, port: int, first: str, second: str,
                      timeout: float) -> dict[str, Any]:
    before = await _entries(session, port)
    status, cache, seconds = await _post(session, port, first, timeout=timeout)
    await _stored(session, port, before)
    samples: list[float] = []
    stop_at = asyncio.Event()
    poller = asyncio.create_task(_poll_health(session, port, stop_at, samples))
    await asyncio.sleep(0.2)
    try:
        status, cache, seconds = await _post(session, port, second, timeout=timeout)
        outcome: dict[str, Any] = {"status": status, "cache": cache, "seconds": round(seconds, 3)}
    except TimeoutError:
        outcome = {"status": None, "cache": None, "seconds": None, "timed_out": True}
    stop_at.set()
    await asyncio.wait([poller], timeout=5)
    poller.cancel()
    outcome.update(health_max_s=round(max(samples, default=0.0), 3), health_samples=len(samples))
    return outcome


# 1,300 words stay under the semantic tier's query cap (4,000 characters), so the verifier does run
STALL_CASES: list[tuple[str, int, int]] = [("1,300 words", 1300, 1300), ("2,000 words", 2000, 2000),
                                           ("4,000 words", 4000, 4000), ("8,000 words", 8000, 8000),
                                           ("1 MB then 5 MB", 200_000, 1_000_000)]


async def stall(root: Path, workdir: Path, upstream_port: int, quick: bool, timeout: float) -> list[dict]:
    results = []
    cases = STALL_CASES[:4] if quick else STALL_CASES
    proc, port = start_deja(root, workdir / "stall", upstream_port)
    try:
        async with aiohttp.ClientSession() as session:
            for i, (name, first_words, second_words) in enumerate(cases):
                word = f"w{i}"
                outcome = await _stall_case(session, port, f"{word} " * first_words,
                                            f"{word} " * second_words + "extra", timeout)
                outcome["case"] = name
                if outcome.get("timed_out"):
                    outcome["sigterm_stop_s"] = _sigterm_stops(proc)
                    proc, port = start_deja(root, workdir / "stall", upstream_port)
                results.append(outcome)
                print(json.dumps(outcome), flush=True)
    finally:
        stop(proc)
    return results


_VERIFIER = """
import json, random, sys, time
from cache.verify import Verifier
verifier = Verifier.load_default()
words = [w for w in verifier.vectors.index if w.isalpha() and w not in {"not", "no", "never", "nor", "none"}]
rng, out = random.Random(3), {}
for size in (1000, 2000, 4000, 8000):
    pairs = {"repetitive": (("w0 " * size)[:size], ("w0 " * size)[:size - 6] + " extra"),
             "diverse": tuple(" ".join(rng.choice(words) for _ in range(size // 4))[:size] for _ in range(2))}
    for kind, (a, b) in pairs.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            verifier.check(a, b, 0.9999)
            times.append(time.perf_counter() - started)
        out[f"{kind} {size}"] = round(max(times), 4)
print(json.dumps(out))
"""


def verifier_costs(root: Path) -> dict[str, float]:
    """Seconds of one ``Verifier.check`` (the slowest of three) per pair kind and size, in the code at ``root``."""
    done = subprocess.run([sys.executable, "-c", _VERIFIER], env=_env(root), cwd=root, capture_output=True,
                          text=True, timeout=3600, check=True)  # cwd: "-c" puts the working directory first
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _vocabulary(n: int = 5000) -> list[str]:
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _prompt(vocab: list[str], seed: int, size: int) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(vocab)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)  # noqa: E731
    return {"n": len(ordered), "p50_s": pick(0.5), "p99_s": pick(0.99), "max_s": round(ordered[-1], 4)}


async def _small_requests(session: aiohttp.ClientSession, port: int, hit_text: str, stop_at: asyncio.Event,
                          out: dict[str, list[float]]) -> None:
    n = 0
    while not stop_at.is_set():
        try:
            if n % 2 == 0:
                status, cache, seconds = await _post(session, port, hit_text)
                kind = "exact_hit" if cache == "hit-exact" else "exact_hit_missed"
            else:
                status, cache, seconds = await _post(session, port, f"small question {n}?",
                                                     headers={"Cache-Control": "no-store"})
                kind = "no_store_miss"
            out.setdefault(kind if status == 200 else f"{kind}_failed", []).append(seconds)
        except (aiohttp.ClientError, TimeoutError):
            out.setdefault("errors", []).append(0.0)
        n += 1


async def burst(root: Path, workdir: Path, upstream_port: int, streams: int, settle: float) -> dict[str, Any]:
    proc, port = start_deja(root, workdir / "burst", upstream_port)
    vocab = _vocabulary()
    prompts = [_prompt(vocab, seed, MB) for seed in range(streams)]
    rss: list[tuple[float, int]] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            hit_text = "What is the capital of France?"
            before = await _entries(session, port)
            await _post(session, port, hit_text)
            await _stored(session, port, before)
            for i in range(4):  # warm-up: tokenizer, embedder, a stream
                await _post(session, port, f"warm-up {i}", stream=True)
            await asyncio.sleep(2)
            pre = memory_kib(proc.pid)
            t0 = time.monotonic()
            sampling = asyncio.Event()

            async def sample() -> None:
                while not sampling.is_set():
                    rss.append((round(time.monotonic() - t0, 2), memory_kib(proc.pid)))
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            small: dict[str, list[float]] = {}
            stop_small = asyncio.Event()
            smalls = asyncio.create_task(_small_requests(session, port, hit_text, stop_small, small))
            outcomes = await asyncio.gather(*(_post(session, port, p, stream=True) for p in prompts),
                                            return_exceptions=True)
            burst_s = time.monotonic() - t0
            stop_small.set()
            await smalls
            await asyncio.sleep(settle)
            sampling.set()
            await sampler
    finally:
        stop(proc)
    statuses = [o[0] if isinstance(o, tuple) else type(o).__name__ for o in outcomes]
    peak = max(v for _, v in rss)
    after = rss[-1][1]
    return {"streams": streams, "prompt_bytes": MB, "burst_s": round(burst_s, 2),
            "statuses": {str(s): statuses.count(s) for s in set(statuses)},
            "rss_pre_mb": round(pre / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
            "rss_after_mb": round(after / 1024, 1), "settle_s": settle,
            "rss_after_vs_pre": round(after / pre - 1, 3),
            "small_requests": {k: _quantiles(v) for k, v in small.items()}, "rss_series": rss}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.deja_root).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="deja-hostile-"))
    sections = args.only.split(",") if args.only else ["stall", "verifier", "burst"]
    previous = RESULTS / f"{args.name}.json"
    result: dict[str, Any] = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result.update({"label": args.label, "deja_root": str(root), "commit": commit or root.name})
    if "verifier" in sections:
        result["verifier"] = verifier_costs(root)
        print(json.dumps(result["verifier"]), flush=True)
    upstream, upstream_port = start_upstream(root)
    try:
        if "stall" in sections:
            result["stall"] = await stall(root, workdir, upstream_port, args.quick, args.timeout)
        if "burst" in sections:
            result["burst"] = await burst(root, workdir, upstream_port, 16 if args.quick else args.streams,
                                          args.settle)
    finally:
        stop(upstream)
    before = RESULTS / "hostile_before.json"
    if not args.name.startswith("hostile_before") and before.exists():
        result["before"] = json.loads(before.read_text())
    return result


def _runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in (result.get("before"), result) if r]


def _bars(ax: Any, runs: list[dict[str, Any]], values: Any, cases: list[str], title: str, ylabel: str) -> None:
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        heights = [max(values(run, case) or 0.0, 1e-4) for case in cases]
        ax.bar([x + i * width for x in range(len(cases))], heights, width, label=f"{run['label']} ({run['commit']})")
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(cases))], cases, rotation=30, ha="right",
                  fontsize=7)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _stall_value(run: dict[str, Any], case: str) -> float | None:
    found = {c["case"]: c for c in run.get("stall", [])}.get(case)
    if found is None:
        return None
    return 1000.0 if found.get("timed_out") else found["health_max_s"]  # a timeout drawn off the scale


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (stall_ax, verify_ax, rss_ax) = plt.subplots(1, 3, figsize=(17, 5))
    runs = _runs(result)
    _bars(stall_ax, runs, _stall_value, [c["case"] for c in result.get("stall", [])],
          "stall: /health/live while a near-duplicate long prompt is answered\n(1000 s = timed out)",
          "slowest /health/live answer (s)")
    _bars(verify_ax, runs, lambda run, case: run.get("verifier", {}).get(case), list(result.get("verifier", {})),
          "one verifier check, worst pairs (chars)", "seconds")
    for run in runs:
        series = run.get("burst", {}).get("rss_series", [])
        rss_ax.plot([t for t, _ in series], [v / 1024 for _, v in series], label=f"{run['label']} ({run['commit']})")
    rss_ax.axhline(1536, color="red", linestyle="--", linewidth=1, label="1.5 GB target")
    rss_ax.set_xlabel("seconds since the burst began")
    rss_ax.set_ylabel("deja RSS (MB)")
    rss_ax.set_title(f"{result.get('burst', {}).get('streams', '?')} concurrent streams of 1 MB prompts", fontsize=9)
    rss_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="four stall sizes (no 5 MB), 16 streams")
    parser.add_argument("--label", default="after")
    parser.add_argument("--name", default="hostile", help="results file name (hostile_before for the old code)")
    parser.add_argument("--deja-root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="per stall request, seconds")
    parser.add_argument("--only", help="comma-separated sections to (re)measure into an existing results file")
    args = parser.parse_args()
    result = run_and_save(args.name, lambda: measure(args), plot)
    burst_figures = {k: v for k, v in result.get("burst", {}).items() if k != "rss_series"}
    print(json.dumps({"stall": result.get("stall"), "verifier": result.get("verifier"), "burst": burst_figures},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
