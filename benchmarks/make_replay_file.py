"""A JSONL file of chat requests (with answers, usage, latency and labels) made from the Quora dev pairs,
for ``deja cache replay``:

    .venv/bin/python -m benchmarks.make_replay_file --requests 5000 --out qqp-replay.jsonl

Traffic over ``--days`` days: each pair's ``text_a`` is asked at a random time and its ``text_b`` some hours
later; then earlier questions are asked again (60% verbatim, 40% typed casually: lower case, no question
mark) until ``--requests``. Every record carries ``label``: the cluster of questions QQP marks as duplicates
(joined transitively), so the replay can measure its wrong hits. Answers are placeholders; their usage is
counted with deja's token counter and their latency drawn from a log-normal around 1.2 s. Deterministic
for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

from benchmarks.qqp import DEFAULT_QQP, Pair, load_pairs

MODEL = "gpt-4o-mini"
DAY = 86_400.0


def clusters(pairs: list[Pair]) -> dict[str, str]:
    """Each text's cluster id: texts joined by duplicate pairs share one."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find(p.text_a), find(p.text_b)
        if p.label == 1 and a != b:
            parent[max(a, b)] = min(a, b)
    roots = sorted({find(t) for t in parent})
    ids = {r: f"q{i}" for i, r in enumerate(roots)}
    return {t: ids[find(t)] for t in parent}


def casual(text: str) -> str:
    """How people retype a question: lower case, no final question mark."""
    return text.lower().rstrip().rstrip("?").rstrip()


def events(pairs: list[Pair], n: int, days: float, rng: random.Random) -> list[tuple[float, str, str]]:
    """(time, text, the text whose cluster it belongs to), sorted by time, ``n`` of them."""
    span = days * DAY
    out: list[tuple[float, str, str]] = []
    for p in rng.sample(pairs, len(pairs)):
        t = rng.uniform(0, span * 0.8)
        out.append((t, p.text_a, p.text_a))
        out.append((min(span, t + rng.expovariate(1 / 7200)), p.text_b, p.text_b))
    out.sort()
    base = list(out)
    while len(out) < n:
        t0, text, origin = base[rng.randrange(len(base))]
        t = rng.uniform(t0, span)
        out.append((t, text if rng.random() < 0.6 else casual(text), origin))
    out.sort()
    return out[:n]


def record(ts: float, text: str, label: str, rng: random.Random, count: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    answer = f"(a placeholder answer to: {text})"
    completion = rng.randint(80, 400)
    return {
        "ts": round(ts, 3),
        "request": {"model": MODEL, "messages": messages},
        "response": {"object": "chat.completion", "model": MODEL,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": answer}}],
                     "usage": {"prompt_tokens": count(messages, MODEL), "completion_tokens": completion,
                               "total_tokens": count(messages, MODEL) + completion}},
        "latency_ms": round(1200 * math.exp(rng.gauss(0, 0.5)), 1),
        "label": label,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=Path("qqp-replay.jsonl"))
    args = parser.parse_args(argv)
    from compression import count_tokens

    rng = random.Random(args.seed)
    pairs = load_pairs(args.data)
    if args.requests < 2 * len(pairs):  # a smaller file: fewer pairs, the same share of re-asks
        pairs = rng.sample(pairs, max(1, int(args.requests * 0.4)))
    cluster = clusters(pairs)
    with open(args.out, "w", encoding="utf-8") as handle:
        for ts, text, origin in events(pairs, args.requests, args.days, rng):
            handle.write(json.dumps(record(ts, text, cluster[origin], rng, count_tokens)) + "\n")
    print(f"wrote {args.requests} requests ({len(pairs)} QQP pairs) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
