"""The built-in offline model ``sim``: a LiteLLM custom provider, so it takes the same path through the Router.

It answers deterministically from the prompt after a configurable delay (so a cache hit is visibly faster), and
streams word by word with usage. Deployments use ``litellm_params: {model: sim/<anything>}``; the delays come
from ``litellm_params.sim_delay_ms`` / ``sim_word_delay_ms`` or the handler's defaults.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from litellm import CustomLLM, ModelResponse
from litellm.types.utils import GenericStreamingChunk

PROVIDER = "sim"
_WORDS = ("indeed", "certainly", "notably", "briefly", "simply", "clearly", "precisely", "plainly")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def sim_answer(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer to a conversation: a pure function of the messages."""
    question = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            question = _text_of(message.get("content")).strip()
            break
    digest = hashlib.sha256(repr([(m.get("role"), _text_of(m.get("content"))) for m in messages]).encode())
    word = _WORDS[digest.digest()[0] % len(_WORDS)]
    words = question.split()
    topic = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
    return f"[sim {digest.hexdigest()[:8]}] {word.capitalize()}, you asked: {topic or '(nothing)'}"


def _count(messages: list[dict[str, Any]]) -> int:
    return sum(len(_text_of(m.get("content")).split()) + 4 for m in messages)


class SimLLM(CustomLLM):
    def __init__(self, *, delay_ms: float = 300.0, word_delay_ms: float = 15.0) -> None:
        super().__init__()
        self.delay_ms = delay_ms
        self.word_delay_ms = word_delay_ms

    def _delays(self, kwargs: dict[str, Any]) -> tuple[float, float]:
        params = {**(kwargs.get("litellm_params") or {}), **(kwargs.get("optional_params") or {})}
        delay = float(params.get("sim_delay_ms", self.delay_ms)) / 1000
        word = float(params.get("sim_word_delay_ms", self.word_delay_ms)) / 1000
        return delay, word

    def _fill(self, model_response: ModelResponse, model: str, messages: list[dict[str, Any]]) -> ModelResponse:
        text = sim_answer(messages)
        prompt, completion = _count(messages), len(text.split())
        model_response.id = f"chatcmpl-sim{uuid.uuid4().hex[:21]}"
        model_response.created = int(time.time())
        model_response.model = model
        model_response.choices[0].message.content = text  # type: ignore[union-attr]
        model_response.choices[0].finish_reason = "stop"
        model_response.usage = {  # type: ignore[attr-defined]
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return model_response

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        delay, _ = self._delays(kwargs)
        time.sleep(delay)
        return self._fill(kwargs["model_response"], model, messages)

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        delay, _ = self._delays(kwargs)
        await asyncio.sleep(delay)
        return self._fill(kwargs["model_response"], model, messages)

    def streaming(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:  # type: ignore[override]
        raise NotImplementedError("sim streams only asynchronously")

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        delay, word_delay = self._delays(kwargs)
        await asyncio.sleep(delay)
        words = sim_answer(messages).split(" ")
        for i, word in enumerate(words):
            if i and word_delay:
                await asyncio.sleep(word_delay)
            last = i == len(words) - 1
            usage = None
            if last:
                prompt = _count(messages)
                usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
            yield GenericStreamingChunk(
                text=word if last else word + " ", tool_use=None, is_finished=last,
                finish_reason="stop" if last else "", usage=usage, index=0)  # type: ignore[typeddict-item]
