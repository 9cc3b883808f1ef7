"""Token counting: the right tokenizer per model, offline."""

from __future__ import annotations

import tiktoken

from compression import count_text_tokens, count_tokens

TEXT = "Prompt compression keeps the provider's prefix cache intact — naïvely, or not. 🙂 " * 20


def test_openai_models_use_their_tiktoken_encoding() -> None:
    o200k = len(tiktoken.get_encoding("o200k_base").encode(TEXT))
    cl100k = len(tiktoken.get_encoding("cl100k_base").encode(TEXT))
    assert o200k != cl100k
    assert count_text_tokens(TEXT, "gpt-4o") == o200k
    assert count_text_tokens(TEXT, "openai/gpt-4o-mini") == o200k
    assert count_text_tokens(TEXT, "gpt-4") == cl100k


def test_unknown_and_download_needing_models_fall_back_to_cl100k() -> None:
    cl100k = len(tiktoken.get_encoding("cl100k_base").encode(TEXT))
    assert count_text_tokens(TEXT, "no-such-model-xyz") == cl100k
    assert count_text_tokens(TEXT, "together_ai/meta-llama/llama-3-70b") == cl100k


def test_other_providers_use_litellm_counter(monkeypatch) -> None:
    import litellm

    from compression import tokens

    expected = litellm.token_counter(model="claude-sonnet-4-5", text=TEXT)
    assert count_text_tokens(TEXT, "claude-sonnet-4-5") == expected
    # Which tokenizer LiteLLM picks for Claude depends on its install (it may fall back to cl100k),
    # so prove the routing itself: Claude goes through LiteLLM's counter, OpenAI models never do.
    asked: list[str] = []

    def counter(*, model: str, text: str) -> int:
        asked.append(model)
        return 7

    monkeypatch.setattr(litellm, "token_counter", counter)
    tokens._counter_for.cache_clear()
    try:
        assert count_text_tokens(TEXT, "claude-sonnet-4-5") == 7
        assert count_text_tokens(TEXT, "gpt-4") != 7
        assert asked == ["claude-sonnet-4-5"]
    finally:
        tokens._counter_for.cache_clear()


def test_special_token_text_is_counted_not_rejected() -> None:
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1


def test_message_accounting_follows_openai_rules() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there", "name": "ada"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
    ]
    enc = tiktoken.get_encoding("o200k_base")
    expected = 3 + 3 * 3 + len(enc.encode("Be brief.")) + len(enc.encode("Hi there"))
    expected += 1 + len(enc.encode("ada")) + len(enc.encode("f")) + len(enc.encode('{"a":1}'))
    assert count_tokens(messages, "gpt-4o") == expected
    assert count_tokens([], "gpt-4o") == 0
