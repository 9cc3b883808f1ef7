"""Quora Question Pairs: loading and a deterministic fit / calibrate / test split.

Each pair goes to a split by a hash of its (text_a, text_b) content, so the split is stable across runs,
machines and file orderings. Calibration fits only on ``fit``, picks cutoffs only on ``calibrate``; every
reported figure comes from ``test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_QQP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "qqp-dev.jsonl"
SPLITS: tuple[tuple[str, int], ...] = (("fit", 50), ("calibrate", 20), ("test", 30))


@dataclass(frozen=True)
class Pair:
    text_a: str
    text_b: str
    label: int


def split_of(pair: Pair) -> str:
    """The split ('fit', 'calibrate' or 'test') of a pair, from a hash of its two texts."""
    digest = hashlib.sha256(f"{pair.text_a}\x1f{pair.text_b}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    upper = 0
    for name, share in SPLITS:
        upper += share
        if bucket < upper:
            return name
    raise AssertionError("split shares must add up to 100")


def load_pairs(path: str | Path = DEFAULT_QQP) -> list[Pair]:
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                pairs.append(Pair(str(row["text_a"]), str(row["text_b"]), int(row["label"])))
    return pairs


def load_split(name: str, path: str | Path = DEFAULT_QQP) -> list[Pair]:
    if name not in {s for s, _ in SPLITS}:
        raise ValueError(f"unknown split {name!r}")
    return [p for p in load_pairs(path) if split_of(p) == name]


def embed_all(texts: Sequence[str], cache_path: str | Path | None = None, *, chunk: int = 256) -> np.ndarray:
    """Embeddings of ``texts`` (rows in order) with deja's default embedder; optionally reusing an .npz cache
    (keep one cache file per embedding backend: the file does not record which one wrote it)."""
    unique = sorted(set(texts))
    known: dict[str, np.ndarray] = {}
    if cache_path is not None and Path(cache_path).exists():
        with np.load(cache_path, allow_pickle=False) as data:
            known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
    missing = [t for t in unique if t not in known]
    if missing:
        vectors = _static_embed(missing) if _BACKEND["static"] else asyncio.run(_embed(missing, chunk))
        known.update(zip(missing, vectors, strict=True))
        if cache_path is not None:
            keys = sorted(known)
            np.savez(cache_path, texts=np.array(keys), vectors=np.stack([known[k] for k in keys]))
    return np.stack([known[t] for t in texts]).astype(np.float32)


_BACKEND = {"static": False}


@contextlib.contextmanager
def static_vectors() -> Iterator[None]:
    """Within: ``embed_all`` (and so every pool and fit here) uses the gate's static vectors
    (``cache.gate.StaticEmbedder``) instead of the transformer's, e.g. to fit a verifier on the static cosine."""
    _BACKEND["static"] = True
    try:
        yield
    finally:
        _BACKEND["static"] = False


@functools.cache
def _gate() -> Any:
    from cache.gate import StaticEmbedder

    return StaticEmbedder.load()


def _static_embed(texts: list[str]) -> np.ndarray:
    gate = _gate()
    return np.stack([gate.embed(text) for text in texts]).astype(np.float32)


async def make_embedder(**kwargs: Any) -> Any:
    """deja's default embedder (``cache.embedder.create_embedder``: ONNX when available, else torch)."""
    from cache.embedder import create_embedder

    return await create_embedder(**kwargs)


def describe_embedder(embedder: Any) -> str:
    """'OnnxEmbedder(int8)' / 'SentenceTransformerEmbedder': which backend produced the vectors."""
    precision = getattr(embedder, "precision", None)
    return type(embedder).__name__ + (f"({precision})" if precision else "")


async def _embed(texts: list[str], chunk: int) -> np.ndarray:
    embedder = await make_embedder()
    print(f"embedding {len(texts)} texts with {describe_embedder(embedder)}", file=sys.stderr)
    try:
        parts = [await embedder.embed(texts[i : i + chunk]) for i in range(0, len(texts), chunk)]
    finally:
        await embedder.close()
    return np.concatenate(parts)


@dataclass(frozen=True)
class PoolSetup:
    """A split as a cache: the unique ``text_a`` are the stored entries, each ``text_b`` is a query."""

    pairs: list[Pair]
    pool: list[str]  # unique text_a, the cached questions
    partner: np.ndarray  # (n_pairs,) index into pool of each pair's text_a
    labels: np.ndarray  # (n_pairs,)
    pair_cosine: np.ndarray  # (n_pairs,) cosine(text_a, text_b)
    cand: np.ndarray  # (n_pairs, k) pool indices of the k nearest entries to text_b, best first
    cand_cosine: np.ndarray  # (n_pairs, k)
    cand_same: np.ndarray  # (n_pairs, k) the candidate is literally the query (case and spacing aside)


def pool_setup(pairs: list[Pair], cache_path: str | Path | None = None, k: int = 5) -> PoolSetup:
    pool = sorted({p.text_a for p in pairs})
    where = {t: i for i, t in enumerate(pool)}
    pool_vecs = embed_all(pool, cache_path)
    query_vecs = embed_all([p.text_b for p in pairs], cache_path)
    partner = np.array([where[p.text_a] for p in pairs])
    sims = query_vecs @ pool_vecs.T
    cand = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return PoolSetup(
        pairs=pairs,
        pool=pool,
        partner=partner,
        labels=np.array([p.label for p in pairs]),
        pair_cosine=sims[np.arange(len(pairs)), partner],
        cand=cand,
        cand_cosine=np.take_along_axis(sims, cand, axis=1),
        cand_same=np.array(
            [[_norm(pool[c]) == _norm(p.text_b) for c in row] for p, row in zip(pairs, cand, strict=True)]
        ),
    )


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Outcome:
    served: int
    right: int
    duplicates: int

    @property
    def precision(self) -> float:
        """Share of served hits that are right."""
        return self.right / self.served if self.served else 1.0

    @property
    def hit_rate(self) -> float:
        """Share of duplicate queries answered with their partner's entry."""
        return self.right / self.duplicates if self.duplicates else 0.0


def pool_outcome(setup: PoolSetup, accept: np.ndarray) -> Outcome:
    """Serve the first accepted candidate of each query (``accept``: (n_pairs, k) bool).

    Right: the pair's own ``text_a`` when the pair is a duplicate, or a stored question that is literally the
    query (another pair's copy of the same text). Anything else served is wrong.
    """
    served = accept.any(axis=1)
    first = np.argmax(accept, axis=1)
    rows = np.arange(len(first))
    chosen = setup.cand[rows, first]
    right = served & (((chosen == setup.partner) & (setup.labels == 1)) | setup.cand_same[rows, first])
    return Outcome(int(served.sum()), int(right.sum()), int((setup.labels == 1).sum()))


def pair_outcome(labels: np.ndarray, accept: np.ndarray) -> Outcome:
    """Pair by pair: each pair's text_b looked up against its own text_a only."""
    return Outcome(int(accept.sum()), int((accept & (labels == 1)).sum()), int((labels == 1).sum()))


def results_parser(doc: str, name: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every QQP-based benchmark takes: ``--quick``, ``--data`` and ``--out`` (results/<name>.json)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / f"{name}.json")
    return parser


def write_results(out: Path, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]) -> None:
    """``out`` (JSON), its PNG beside it, and the result on stdout."""
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result, indent=1))
