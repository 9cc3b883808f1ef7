"""The lossless pass over message lists, levels, and what is never touched."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from compression import (
    CompressionError,
    CompressionOptions,
    InvalidMessagesError,
    Level,
    compress,
    count_tokens,
    normalize_messages,
    parse_level,
)

TOOL_OUTPUT = json.dumps(
    {"results": [{"id": i, "title": f"Item   {i}", "price": i * 1.5, "tags": ["x", "y"]} for i in range(30)]},
    indent=2,
)
ARGS = '{\n  "query":   "weather  in   Paris",\n  "units": "metric"\n}'
MESSY = "Hello    there.   \n\n\n\n\nCan you   help me   with this?   "


def conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are   a helpful   assistant.\n\n\n\nBe brief."},
        {"role": "user", "content": MESSY, "name": "ada", "x-custom": {"keep": "me  too"}},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": ARGS}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL_OUTPUT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look   at   this   image:\n\n\n\n"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR  w0K\n\n\nGgo="}},
                {"type": "text", "text": "What    is it?"},
            ],
        },
    ]


def test_lossless_normalises_text_and_keeps_everything_else() -> None:
    messages = conversation()
    before = copy.deepcopy(messages)
    out = normalize_messages(messages)
    assert messages == before  # input untouched
    assert out is not messages and all(o is not m for o, m in zip(out, messages, strict=True))
    assert out[0]["content"] == "You are a helpful assistant.\n\nBe brief."
    assert out[1] == {**before[1], "content": "Hello there.\n\nCan you help me with this?"}
    assert out[2] == before[2]  # tool call arguments untouched, content None kept
    assert out[2]["tool_calls"][0]["function"]["arguments"] == ARGS
    assert json.loads(out[3]["content"]) == json.loads(TOOL_OUTPUT)
    assert len(out[3]["content"]) < len(TOOL_OUTPUT) / 2
    assert out[4]["content"][1] == before[4]["content"][1]  # the image part is untouched
    assert [p.get("text") for p in out[4]["content"]] == ["Look at this image:", None, "What is it?"]


def test_nothing_at_or_before_the_last_cache_control_marker_changes() -> None:
    messages = conversation()
    messages[1]["content"] = [{"type": "text", "text": MESSY, "cache_control": {"type": "ephemeral"}}]
    out = normalize_messages(messages)
    assert json.dumps(out[:2]) == json.dumps(messages[:2])
    assert out[3]["content"] != messages[3]["content"]  # after the marker, normalisation applies


def test_message_level_cache_control_protects_through_that_message() -> None:
    messages = conversation()
    messages[3]["cache_control"] = {"type": "ephemeral"}
    out = normalize_messages(messages)
    assert json.dumps(out[:4]) == json.dumps(messages[:4])
    assert out[4]["content"][0]["text"] == "Look at this image:"


async def test_off_returns_the_same_list_and_equal_counts() -> None:
    messages = conversation()
    out, report = await compress(messages, level=Level.OFF, model="gpt-4o")
    assert out is messages
    assert report.level is Level.OFF
    assert report.tokens_original == report.tokens_sent == count_tokens(messages, "gpt-4o")
    assert report.saved == 0


@pytest.mark.parametrize("level", [Level.LOSSLESS, Level.AUTO])
async def test_wasteful_input_sends_fewer_tokens(level: Level) -> None:
    messages = conversation()
    out, report = await compress(messages, level=level, model="gpt-4o")
    assert report.tokens_original == count_tokens(messages, "gpt-4o")
    assert report.tokens_sent == count_tokens(out, "gpt-4o")
    assert report.tokens_sent < report.tokens_original
    assert report.saved == report.tokens_original - report.tokens_sent > 100


async def test_compression_is_deterministic() -> None:
    first, _ = await compress(conversation(), level=Level.LOSSLESS, model="gpt-4o")
    second, _ = await compress(conversation(), level=Level.LOSSLESS, model="gpt-4o")
    assert json.dumps(first) == json.dumps(second)


async def test_lossless_prefix_is_byte_identical_across_turns() -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": "Be   concise.\n\n\n"}]
    previous: list[dict[str, Any]] | None = None
    for turn in range(6):
        history.append({"role": "user", "content": f"Question   {turn}:\n\n\n\n{TOOL_OUTPUT}"})
        out, _ = await compress(history, level=Level.LOSSLESS, model="gpt-4o")
        if previous is not None:
            assert json.dumps(out[: len(previous)]) == json.dumps(previous)
        previous = out
        history.append({"role": "assistant", "content": f"Answer   {turn}.  "})


def test_parse_level() -> None:
    assert parse_level(None, Level.LOSSLESS) is Level.LOSSLESS
    assert parse_level("", Level.AUTO) is Level.AUTO
    assert parse_level(" Auto ", Level.LOSSLESS) is Level.AUTO
    assert parse_level("off", Level.LOSSLESS) is Level.OFF
    with pytest.raises(CompressionError, match="'synthlang'"):
        parse_level("synthlang", Level.LOSSLESS)


async def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(InvalidMessagesError, match="message 1"):
        await compress([{"role": "user", "content": "hi"}, "nope"], level=Level.LOSSLESS, model="gpt-4o")
    with pytest.raises(CompressionError, match="'max'"):
        await compress([], level="max", model="gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(CompressionError):
        CompressionOptions(auto_ratio=0.5)


async def test_unusual_content_passes_through() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "  "}, {"type": "input_audio", "a": "x  y"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "a   b", "signature": "s  ig"}]},
        {"role": "user", "content": 42},
    ]
    out = normalize_messages(messages)
    assert out == messages
