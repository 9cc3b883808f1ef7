"""OnnxEmbedder: the same vectors as sentence-transformers, the Embedder protocol, export cache, factory."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("onnxruntime")

from cache import embedder as embedder_module  # noqa: E402
from cache.embedder import (  # noqa: E402
    Embedder,
    EmbedderClosedError,
    EmbeddingFailedError,
    SentenceTransformerEmbedder,
    _load_model,
    create_embedder,
)
from cache.onnx_embedder import (  # noqa: E402
    INLINE_TOKENIZE_CHARS,
    OnnxEmbedder,
    ensure_onnx_model,
    length_buckets,
)
from tests.unit.cache.loop_probe import LONG_TEXTS, loop_ticks_per_run  # noqa: E402

QQP = Path(__file__).resolve().parents[4] / "shared" / "data" / "qqp-dev.jsonl"


def test_length_buckets_group_similar_lengths_in_order() -> None:
    lengths = [30, 5, 6, 31, 12, 5, 7]
    buckets = length_buckets(lengths, slack=1.25, max_size=2)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        assert len(bucket) <= 2
        assert max(lengths[i] for i in bucket) <= 1.25 * min(lengths[i] for i in bucket)
    assert [lengths[b[0]] for b in buckets] == sorted(lengths[b[0]] for b in buckets)
    assert length_buckets([]) == []


async def test_factory_rejects_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        await create_embedder(backend="tensorflow")


def test_export_of_a_missing_model_fails_with_our_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingFailedError):
        ensure_onnx_model(str(tmp_path / "nowhere"), cache_dir=tmp_path)


@pytest.mark.slow
def test_a_failed_export_reports_the_childs_error(tmp_path: Path) -> None:
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')  # no weights, no tokenizer
    with pytest.raises(EmbeddingFailedError, match=r"cannot export .*broken-model.* \(int8\): \w+"):
        ensure_onnx_model(str(model), cache_dir=tmp_path / "exports")
    assert not list((tmp_path / "exports").glob("*.onnx")) and not list((tmp_path / "exports").glob("*.tmp"))


@pytest.fixture(scope="session")
def qqp_pairs() -> list[tuple[str, str]]:
    if not QQP.is_file():
        pytest.skip(f"QQP data missing at {QQP}")
    with QQP.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(500), handle, strict=False)]
    return [(r["text_a"], r["text_b"]) for r in rows]


@pytest.fixture(scope="session")
def torch_vectors(qqp_pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' own vectors (the reference) for the 500 pairs, computed once."""
    model = _load_model(None)
    encode = lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True)  # noqa: E731
    return encode([a for a, _ in qqp_pairs]), encode([b for _, b in qqp_pairs])


@pytest.fixture(scope="session")
def onnx_files() -> dict[str, Path]:
    """Export once per machine (the user cache directory), as production does."""
    return {p: ensure_onnx_model(precision=p) for p in ("fp32", "int8")}  # type: ignore[misc]


@pytest.fixture
async def int8(onnx_files: dict[str, Path]) -> AsyncIterator[OnnxEmbedder]:
    emb = await OnnxEmbedder.create(precision="int8")
    yield emb
    await emb.close()


async def _embed_pairs(emb: OnnxEmbedder, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    return await emb.embed([a for a, _ in pairs]), await emb.embed([b for _, b in pairs])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable")  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


@pytest.mark.slow
async def test_fp32_matches_sentence_transformers_per_sentence(
    onnx_files: dict[str, Path], qqp_pairs: list[tuple[str, str]], torch_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    emb = await OnnxEmbedder.create(precision="fp32")
    try:
        vectors = await emb.embed([a for a, _ in qqp_pairs[:200]])
    finally:
        await emb.close()
    cosines = (vectors * torch_vectors[0][:200]).sum(axis=1)
    assert cosines.min() >= 0.99, f"worst sentence {int(cosines.argmin())}: {cosines.min():.4f}"


@pytest.mark.slow
async def test_int8_keeps_the_pair_similarity_ranking(
    int8: OnnxEmbedder, qqp_pairs: list[tuple[str, str]], torch_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    a, b = await _embed_pairs(int8, qqp_pairs)
    reference = (torch_vectors[0] * torch_vectors[1]).sum(axis=1)
    assert _spearman(reference, (a * b).sum(axis=1)) >= 0.98
    assert (a * torch_vectors[0]).sum(axis=1).mean() >= 0.98  # and stays close sentence by sentence


@pytest.mark.slow
async def test_shape_dtype_normalised_and_protocol(int8: OnnxEmbedder) -> None:
    assert isinstance(int8, Embedder)
    long_text = "why is the sky blue " * 200  # truncated at the model's max_seq_length, not an error
    vectors = await int8.embed(["How do I learn Python?", "", long_text, "How do I learn Python?"])
    assert vectors.shape == (4, int8.dim) == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[3])
    assert (await int8.embed([])).shape == (0, 384)


@pytest.mark.slow
async def test_similar_texts_are_closer_than_unrelated(int8: OnnxEmbedder) -> None:
    a, b, c = await int8.embed(
        ["How can I lose weight quickly?", "What is the fastest way to lose weight?", "Who painted the Mona Lisa?"]
    )
    assert float(a @ b) > float(a @ c) + 0.3


async def test_int8_vector_does_not_depend_on_its_batch_companions(int8: OnnxEmbedder) -> None:
    text = "How do I learn Python?"
    alone = int8._runner.encode([text])[0]
    for companion in ("How can I learn Python?", "What is it?", "Where is the Eiffel tower?"):
        batched = int8._runner.encode([text, companion])[0]
        np.testing.assert_array_equal(batched, alone)


@pytest.mark.slow
async def test_concurrent_calls_are_micro_batched_and_padding_does_not_change_vectors(
    onnx_files: dict[str, Path],
) -> None:
    sizes: list[int] = []
    emb = await OnnxEmbedder.create(precision="fp32", max_wait_ms=50, on_batch=lambda n, s: sizes.append(n))
    texts = [f"question number {i} about batching" + " and padding" * (i % 7) for i in range(20)]
    try:
        results = await asyncio.gather(*(emb.embed([t]) for t in texts))
    finally:
        await emb.close()
    assert sum(sizes) == 20 and max(sizes) > 1 and len(sizes) < 20
    alone = await OnnxEmbedder.create(precision="fp32")
    try:
        for i in (0, 6, 13):
            np.testing.assert_allclose(results[i][0], (await alone.embed([texts[i]]))[0], atol=1e-4)
    finally:
        await alone.close()


@pytest.mark.slow
async def test_max_batch_and_lru(onnx_files: dict[str, Path]) -> None:
    sizes: list[int] = []
    emb = await OnnxEmbedder.create(max_batch=4, on_batch=lambda n, s: sizes.append(n))
    try:
        first = await emb.embed([f"text {i}" for i in range(10)] + ["text 3"])
        assert first.shape == (11, 384) and sum(sizes) == 10 and max(sizes) <= 4
        again = await emb.embed(["text 7", "text 3"])
    finally:
        await emb.close()
    assert sum(sizes) == 10  # served from the LRU
    np.testing.assert_array_equal(again, first[[7, 3]])


@pytest.mark.slow
async def test_event_loop_keeps_running_while_encoding(int8: OnnxEmbedder) -> None:
    during = await loop_ticks_per_run(int8, LONG_TEXTS)
    assert len(during) == len(LONG_TEXTS)  # int8 runs each text alone
    # the event loop kept turning while the runs were computed (a run on the loop would leave 0 for every one);
    # the median, not every run: the first ones can see only a couple of turns when ONNX Runtime's threads hold
    # both cores before the OS schedules the loop's thread again (2 and 2, then thousands, seen once on 2 cores)
    assert statistics.median(during) > 10


@pytest.mark.slow
async def test_closed_embedder_refuses(onnx_files: dict[str, Path]) -> None:
    emb = await OnnxEmbedder.create()
    await emb.close()
    with pytest.raises(EmbedderClosedError):
        await emb.embed(["too late"])


_EXPORT_AND_REPORT = """
import json, sys
from cache.onnx_embedder import ensure_onnx_model
path = ensure_onnx_model(precision="fp32", cache_dir=sys.argv[1])
print(json.dumps({"path": str(path), "held": sorted({"torch", "transformers", "onnx"} & set(sys.modules))}))
"""


@pytest.mark.slow
async def test_export_is_cached_and_reused(tmp_path: Path) -> None:
    # a fresh process exports, as a server does at first start; torch and transformers stay in the export's child,
    # which imports deja's own cache package even where the working directory holds another one
    script, workdir = tmp_path / "first_start.py", tmp_path / "project"
    script.write_text(_EXPORT_AND_REPORT)
    (workdir / "cache").mkdir(parents=True)
    (workdir / "cache" / "__init__.py").write_text('raise ImportError("a project\'s own cache package")\n')
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, cwd=workdir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["held"] == []
    path = await asyncio.to_thread(ensure_onnx_model, precision="fp32", cache_dir=tmp_path)
    assert str(path) == report["path"]
    assert path.parent == tmp_path and path.name.endswith("-fp32.onnx")
    assert not list(tmp_path.glob("*.tmp"))
    stamp = path.stat().st_mtime_ns
    emb = await OnnxEmbedder.create(precision="fp32", cache_dir=tmp_path)
    try:
        assert emb.onnx_path == path and path.stat().st_mtime_ns == stamp
        assert (await emb.embed(["cached export"])).shape == (1, 384)
    finally:
        await emb.close()


@pytest.mark.slow
async def test_factory_backends(onnx_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    auto = await create_embedder(on_batch=lambda n, s: sizes.append(n))
    torch = await create_embedder(backend="torch")
    fp32 = await create_embedder(backend="onnx-fp32")
    try:
        assert isinstance(auto, OnnxEmbedder) and isinstance(torch, SentenceTransformerEmbedder)
        assert auto.precision == "int8" and isinstance(fp32, OnnxEmbedder) and fp32.precision == "fp32"
        await auto.embed(["counted"])
        assert sizes == [1]
    finally:
        await auto.close()
        await torch.close()
        await fp32.close()

    async def broken(*args: object, **kwargs: object) -> OnnxEmbedder:
        raise RuntimeError("no onnx here")

    monkeypatch.setattr(OnnxEmbedder, "create", broken)
    fallback = await create_embedder(backend="auto")
    await fallback.close()
    assert isinstance(fallback, embedder_module.SentenceTransformerEmbedder)
    with pytest.raises(EmbeddingFailedError, match="no onnx here"):
        await create_embedder(backend="onnx")


@pytest.mark.slow
async def test_runs_on_onnx_runtimes_thread_give_the_vectors_of_a_synchronous_run(int8: OnnxEmbedder) -> None:
    texts = ["How do I learn Python?", "What is the capital of France?", "Why is the sky blue?" * 40]
    np.testing.assert_allclose(await int8.embed(texts), int8._runner.encode(texts), atol=1e-6)


@pytest.mark.slow
async def test_begin_starts_a_short_texts_run_before_it_returns(int8: OnnxEmbedder) -> None:
    sizes: list[int] = []
    int8._on_batch = lambda n, s: sizes.append(n)
    text = "How can I improve my English pronunciation?"
    started = int8.begin([text])
    assert not int8._runner.idle.is_set()  # running before anyone awaited
    vectors = await started
    np.testing.assert_allclose(vectors, int8._runner.encode([text]), atol=1e-6)
    assert sizes == [1]
    np.testing.assert_array_equal(await int8.embed([text]), vectors)  # from the LRU
    assert sizes == [1]


@pytest.mark.slow
async def test_begin_leaves_long_texts_and_known_ones_to_embed(int8: OnnxEmbedder) -> None:
    long_text = "Why is the sky blue during the day but red at sunset? " * (INLINE_TOKENIZE_CHARS // 50)
    pending = int8.begin([long_text])
    assert int8._runner.idle.is_set()  # tokenising it would hold the event loop: it waits for embed's worker
    vectors = await pending
    np.testing.assert_allclose(vectors, int8._runner.encode([long_text]), atol=1e-6)
    known = int8.begin([long_text])
    assert int8._runner.idle.is_set()
    np.testing.assert_array_equal(await known, vectors)


@pytest.mark.slow
async def test_close_waits_for_the_runs_in_flight(onnx_files: dict[str, Path]) -> None:
    emb = await OnnxEmbedder.create()
    started = [emb.begin([f"question {i} about closing"]) for i in range(8)]
    assert not emb._runner.idle.is_set()
    await emb.close()
    assert emb._runner.idle.is_set()
    assert all(vectors.shape == (1, 384) for vectors in await asyncio.gather(*started))
    with pytest.raises(EmbedderClosedError):
        await emb.begin(["too late"])


async def test_a_failed_run_is_an_embedding_error(int8: OnnxEmbedder) -> None:
    loop = asyncio.get_running_loop()
    ids = np.array([[101, 2054, 102]], dtype=np.int64)
    bad = {"input_ids": ids, "attention_mask": np.ones((1, 5), dtype=np.int64)}  # shapes that do not agree
    with pytest.raises(EmbeddingFailedError):
        await int8._runner.start(bad, loop)
    assert int8._runner.idle.is_set()
