"""The auto level: query-aware passage selection and history trimming in frozen blocks."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from compression import CompressionOptions, Level, compress, count_text_tokens, normalize_messages

from .conftest import RecordingEmbed, bag_of_words

MODEL = "gpt-4o"
ANSWER = "Document 17: The capital of Zorblat is Quuxville, founded by river traders in the ninth century."
HEAD = "Use the documents below to answer the question."
QUESTION = "Question: what is the capital of Zorblat?"
_WORDS = [f"{a}{b}" for a in ("bra", "clo", "dri", "fen", "gal", "hor", "jun", "kel", "mor", "nus")
          for b in ("tan", "vek", "sol", "mir", "dag", "pel", "rux", "zon")]


def documents(n: int = 30, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    docs = [f"Document {i}: " + " ".join(rng.choice(_WORDS) for _ in range(60)) + "." for i in range(n)]
    docs[min(17, n - 1)] = ANSWER + " " + " ".join(rng.choice(_WORDS) for _ in range(50)) + "."
    return docs


def doc_message(question: str = QUESTION, n: int = 30) -> dict[str, Any]:
    return {"role": "user", "content": "\n\n".join([HEAD, *documents(n), question])}


async def test_selection_keeps_the_relevant_passage_in_order(fake_embed: RecordingEmbed) -> None:
    messages = [{"role": "system", "content": "Be exact."}, doc_message()]
    doc_tokens = sum(count_text_tokens(d, MODEL) for d in documents())
    assert doc_tokens > 2000
    out, report = await compress(messages, level=Level.AUTO, model=MODEL, embed=fake_embed)
    text = out[1]["content"]
    assert text.startswith(HEAD + "\n\n") and text.endswith("\n\n" + QUESTION)
    assert ANSWER in text
    kept = [d for d in documents() if d in text]
    assert kept and [documents().index(d) for d in kept] == sorted(documents().index(d) for d in kept)
    kept_tokens = sum(count_text_tokens(d, MODEL) for d in kept)
    assert doc_tokens / 4 * 0.75 <= kept_tokens <= doc_tokens / 4
    assert report.passages_dropped == 30 - len(kept)
    assert report.tokens_sent < report.tokens_original / 2
    assert fake_embed.calls[0][0] == QUESTION and len(fake_embed.calls) == 1
    assert out[0] == messages[0]


@pytest.mark.parametrize(
    ("message", "options"),
    [
        (doc_message("Summarise all the documents above."), CompressionOptions()),
        (doc_message(n=8), CompressionOptions()),
        (doc_message(), CompressionOptions(auto_min_tokens=100_000)),
    ],
    ids=["no-question", "short-context", "high-threshold"],
)
async def test_selection_does_not_apply(message: dict[str, Any], options: CompressionOptions) -> None:
    out, report = await compress(
        [message], level=Level.AUTO, model=MODEL, embed=RecordingEmbed(), options=options
    )
    assert out == normalize_messages([message])
    assert report.passages_dropped == 0


async def test_without_embed_or_when_embedding_fails_auto_is_lossless() -> None:
    async def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("embedder down")

    async def wrong_shape(texts: list[str]) -> np.ndarray:
        return np.zeros((1, 4), dtype=np.float32)

    lossless = normalize_messages([doc_message()])
    for embed in (None, broken, wrong_shape):
        out, report = await compress([doc_message()], level=Level.AUTO, model=MODEL, embed=embed)
        assert out == lossless and report.passages_dropped == 0


async def test_only_the_last_user_message_is_selected(fake_embed: RecordingEmbed) -> None:
    earlier = doc_message()
    reply = {"role": "assistant", "content": "Quuxville."}
    messages = [earlier, reply, doc_message("Question: who founded it?")]
    out, _ = await compress(messages, level=Level.AUTO, model=MODEL, embed=fake_embed)
    assert out[:2] == normalize_messages(messages[:2])
    assert len(out[2]["content"]) < len(messages[2]["content"]) / 2
    assert [call[0] for call in fake_embed.calls] == ["Question: who founded it?"]


async def test_cache_marked_last_message_is_not_selected(fake_embed: RecordingEmbed) -> None:
    message = doc_message()
    message["cache_control"] = {"type": "ephemeral"}
    out, _ = await compress([message], level=Level.AUTO, model=MODEL, embed=fake_embed)
    assert json.dumps(out) == json.dumps([message])
    assert fake_embed.calls == []


async def test_selection_over_parts_keeps_images_and_drops_empty_parts(fake_embed: RecordingEmbed) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}
    parts = [{"type": "text", "text": HEAD}, image]
    parts += [{"type": "text", "text": doc, "x-id": i} for i, doc in enumerate(documents())]
    parts.append({"type": "text", "text": QUESTION})
    out, report = await compress([{"role": "user", "content": parts}], level=Level.AUTO, model=MODEL,
                                 embed=fake_embed)
    kept = out[0]["content"]
    assert kept[0] == parts[0] and kept[1] == image and kept[-1] == parts[-1]
    assert {"type": "text", "text": documents()[17], "x-id": 17} in kept
    assert all(part["text"] for part in kept if part["type"] == "text")
    assert len(kept) == len(parts) - report.passages_dropped


async def test_selection_ignores_last_bit_embedding_noise() -> None:
    async def noisy(texts: list[str]) -> np.ndarray:
        vectors = bag_of_words(texts)
        return vectors + np.random.default_rng().normal(0, 1e-7, vectors.shape).astype(np.float32)

    outputs = {json.dumps((await compress([doc_message()], level=Level.AUTO, model=MODEL, embed=noisy))[0])
               for _ in range(5)}
    assert len(outputs) == 1


def _turn_messages(turn: int) -> list[dict[str, Any]]:
    if turn % 3 == 2:  # an agent step: a tool call and its result
        function = {"name": "lookup", "arguments": f'{{"n": {turn}}}'}
        call = {"id": f"c{turn}", "type": "function", "function": function}
        result = json.dumps({"turn": turn, "v": [1] * 30}, indent=2)
        return [
            {"role": "user", "content": f"Turn {turn}: look it up. " + "detail " * 40},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{turn}", "content": result},
            {"role": "assistant", "content": f"Found it for turn {turn}. " + "words " * 40},
        ]
    return [
        {"role": "user", "content": f"Turn {turn}: tell me more. " + "detail " * 40},
        {"role": "assistant", "content": f"Answer {turn}. " + "words " * 60},
    ]


async def test_history_trimming_drops_frozen_blocks_and_keeps_the_prefix_stable() -> None:
    options = CompressionOptions(context_window=2500, history_block=8)
    system = {"role": "system", "content": "You are   terse."}
    history: list[dict[str, Any]] = [system]
    previous: list[dict[str, Any]] | None = None
    dropped_per_turn: list[int] = []
    breaks = 0
    for turn in range(30):
        turn_messages = _turn_messages(turn)
        history.append(turn_messages[0])
        out, report = await compress(history, level=Level.AUTO, model=MODEL, options=options)
        assert report.tokens_sent <= 2500
        assert out[0] == {"role": "system", "content": "You are terse."}
        assert out[1]["role"] == "user" and out[-1] == normalize_messages([history[-1]])[0]
        assert out[1:] == normalize_messages(history[1 + report.messages_dropped :])
        tool_ids = [m["tool_call_id"] for m in out if m["role"] == "tool"]
        call_ids = [c["id"] for m in out for c in m.get("tool_calls") or []]
        assert tool_ids == call_ids  # no orphaned tool results, no unanswered calls
        if previous is not None and json.dumps(out[: len(previous)]) != json.dumps(previous):
            breaks += 1
            assert report.messages_dropped > dropped_per_turn[-1]  # the prefix only changes when a block goes
        dropped_per_turn.append(report.messages_dropped)
        history.extend(turn_messages[1:])
        previous = out + normalize_messages(turn_messages[1:])
    # cuts only ever fall on the first user message at or after a fixed block boundary (1 + 8k)
    boundaries = {next(i for i in range(b, len(history)) if history[i]["role"] == "user")
                  for b in range(1, len(history), options.history_block)}
    assert max(dropped_per_turn) > 0
    assert {1 + dropped for dropped in dropped_per_turn} <= boundaries
    assert breaks == len(set(dropped_per_turn)) - 1


async def test_doc_conversation_prefix_is_stable_across_turns(fake_embed: RecordingEmbed) -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": "Answer from the documents."}]
    previous: list[dict[str, Any]] | None = None
    for turn in range(4):
        history.append(doc_message(f"Question {turn}: what is the capital of Zorblat?"))
        out, report = await compress(history, level=Level.AUTO, model=MODEL, embed=fake_embed)
        assert report.passages_dropped > 0
        if previous is not None:
            # everything sent before the previous turn's new message is byte-identical; that message
            # itself (selected for its own question last turn) now goes out in full, losslessly normalised
            assert json.dumps(out[: len(previous) - 1]) == json.dumps(previous[:-1])
            assert out[len(previous) - 1] == normalize_messages([history[len(previous) - 1]])[0]
        previous = out
        history.append({"role": "assistant", "content": f"Quuxville   ({turn})."})


@pytest.mark.slow
async def test_real_model_keeps_the_answer_passage(minilm_embed: Any) -> None:
    topics = [
        ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen."),
        ("Volcano", "Magma rises through the crust and erupts as lava, ash and gas."),
        ("Basketball", "Two teams of five players score by shooting a ball through a hoop."),
        ("Jazz", "The genre originated in New Orleans in the late 19th century with blues roots."),
        ("Mount Everest", "At 8,849 metres it is Earth's highest mountain above sea level."),
        ("Penicillin", "Alexander Fleming discovered penicillin in 1928 at St Mary's Hospital."),
        ("Roman Empire", "Augustus became the first Roman emperor in 27 BC."),
        ("Coffee", "Coffee beans are the roasted seeds of berries from Coffea plants."),
    ]
    docs = [f"Doc {i}, {title}: {fact} " + " ".join([fact] * 6) for i, (title, fact) in enumerate(topics * 3)]
    message = {"role": "user", "content": "\n\n".join([HEAD, *docs, "Question: who discovered penicillin?"])}
    out, report = await compress([message], level=Level.AUTO, model=MODEL, embed=minilm_embed,
                                 options=CompressionOptions(auto_min_tokens=500))
    assert report.passages_dropped >= len(docs) // 2
    assert "Alexander Fleming" in out[0]["content"]


async def test_a_long_first_paragraph_is_a_document_not_an_edge(fake_embed: RecordingEmbed) -> None:
    rng = random.Random(3)
    preamble = "Appendix: " + " ".join(rng.choice(_WORDS) for _ in range(400)) + "."
    assert count_text_tokens(preamble, MODEL) > 300
    message = {"role": "user", "content": "\n\n".join([preamble, *documents(), QUESTION])}
    options = CompressionOptions(auto_ratio=8)  # the budget is smaller than the preamble
    out, _ = await compress([message], level=Level.AUTO, model=MODEL, embed=fake_embed, options=options)
    assert ANSWER in out[0]["content"] and out[0]["content"].endswith(QUESTION)
    assert "Appendix" not in out[0]["content"]
    assert QUESTION == fake_embed.calls[0][0] and any(t.startswith("Appendix") for t in fake_embed.calls[0])
