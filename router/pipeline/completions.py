"""``POST /v1/completions``: OpenAI's legacy Completions API, JSON and streamed, through ``router.pipeline.flow``.

No compression: a prompt is raw text to be continued, where every space may matter. The cache keys the request as
the chat request it amounts to (``api_scope.completions_cache_body``: a string prompt is a semantic query; several
prompts or token arrays are exact only). A hit gets a fresh ``id`` and ``created``, as chat hits do; streamed, it
is replayed as chunks, the finish chunk, the usage chunk when asked, ``[DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from compression import count_text_tokens
from providers.interface import Served
from router.http.parsing import CompletionRequest
from router.pipeline.api_scope import completions_cache_body, text_completion_complete
from router.pipeline.context import Context
from router.pipeline.flow import Api, handle
from router.pipeline.steps import Call, Compressed


def prompt_tokens(prompt: Any, model: str) -> int:
    if isinstance(prompt, str):
        return count_text_tokens(prompt, model)
    if isinstance(prompt, list):
        return sum(prompt_tokens(p, model) if isinstance(p, str | list) else 1 for p in prompt)
    return 0


async def prepare(ctx: Context, request: web.Request, call: Call, body: dict[str, Any]) -> Compressed:
    tokens = prompt_tokens(body.get("prompt"), call.model)
    return Compressed(body=body, tokens_original=tokens, tokens_sent=tokens)


def _budget(ctx: Context, compressed: Compressed) -> int:
    body = compressed.body
    # OpenAI's legacy default is 16 tokens; a request without max_tokens reserves deja's default, as chat does
    completion = body.get("max_tokens") or ctx.settings.limits.default_max_tokens
    return int(completion) * int(body.get("n") or 1) * max(1, int(body.get("best_of") or 1))


def _usage(response: dict[str, Any]) -> tuple[int | None, int]:
    usage = response.get("usage") or {}
    prompt = usage.get("prompt_tokens")
    return (int(prompt) if prompt is not None else None), int(usage.get("completion_tokens") or 0)


class TextFold:
    """Streamed ``text_completion`` chunks: sent as they come (the usage chunk only when the client asked)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.client_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.head: dict[str, Any] | None = None
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.reported: dict[str, Any] | None = None

    def feed(self, item: dict[str, Any]) -> dict[str, Any] | None:
        self.head = self.head or item
        for choice in item.get("choices") or []:
            index = int(choice.get("index") or 0)
            self.texts.setdefault(index, []).append(choice.get("text") or "")
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]
        if item.get("usage"):
            self.reported = item["usage"]
            if not item.get("choices") and not self.client_usage:
                return None
        return item

    def carries_text(self, item: dict[str, Any]) -> bool:
        return any(c.get("text") for c in item.get("choices") or [])

    def usage(self) -> tuple[int | None, int | None]:
        if not self.reported:
            return None, None
        return _usage({"usage": self.reported})

    def text(self) -> str:
        return "".join("".join(parts) for parts in self.texts.values())

    def whole(self) -> dict[str, Any] | None:
        if self.head is None or not self.texts or any(i not in self.finish for i in self.texts):
            return None
        choices = [{"text": "".join(self.texts[i]), "index": i, "logprobs": None, "finish_reason": self.finish[i]}
                   for i in sorted(self.texts)]
        whole: dict[str, Any] = {k: self.head[k] for k in ("id", "created", "model") if k in self.head}
        whole.update({"object": "text_completion", "choices": choices})
        if self.reported:
            whole["usage"] = self.reported
        return whole


def _fresh(stored: dict[str, Any]) -> dict[str, Any]:
    return {**stored, "id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time())}


def replay(stored: dict[str, Any], body: dict[str, Any], words_per_chunk: int = 4) -> list[dict[str, Any]]:
    """A stored ``text_completion`` as the chunks of a live stream."""
    fresh = _fresh(stored)
    head = {"id": fresh["id"], "object": "text_completion", "created": fresh["created"], "model": fresh.get("model")}
    chunks = []
    for choice in fresh.get("choices") or []:
        words = str(choice.get("text") or "").split(" ")
        for start in range(0, len(words), words_per_chunk):
            piece = " ".join(words[start:start + words_per_chunk])
            text = piece if start == 0 else " " + piece
            chunks.append({**head, "choices": [{"text": text, "index": choice.get("index", 0), "logprobs": None,
                                                "finish_reason": None}]})
        chunks.append({**head, "choices": [{"text": "", "index": choice.get("index", 0), "logprobs": None,
                                            "finish_reason": choice.get("finish_reason")}]})
    if (body.get("stream_options") or {}).get("include_usage") and fresh.get("usage"):
        chunks.append({**head, "choices": [], "usage": fresh["usage"]})
    return chunks


async def _call_json(ctx: Context, body: dict[str, Any], headers: dict[str, str]) -> tuple[dict[str, Any], Served]:
    return await ctx.provider.complete_text(body, headers)


def _call_stream(ctx: Context, body: dict[str, Any], served: Served,
                 headers: dict[str, str]) -> AsyncGenerator[dict[str, Any], None]:
    upstream = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    return ctx.provider.complete_text_stream(upstream, served, headers)


API = Api(route="completions", request_model=CompletionRequest, request_body=lambda body: body.get("prompt"),
          prepare=prepare, budget=_budget, cache_body=completions_cache_body, complete=text_completion_complete,
          usage=_usage, call_json=_call_json, call_stream=_call_stream, fold=TextFold, hit_json=_fresh,
          replay=replay, named_events=False, error_event=lambda body: body)


async def completions(request: web.Request) -> web.StreamResponse:
    return await handle(request, API)
