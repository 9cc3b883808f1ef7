"""``POST /v1/responses``: OpenAI's Responses API, JSON and its own event stream, through ``router.pipeline.flow``.

Compression applies to a plain-text input (a string, or messages of text); the cache keys the request as the chat
request it amounts to (``api_scope.responses_cache_body``: plain text is a semantic query, anything else exact
only). A hit is the stored ``response`` itself, its ``id`` included, so a ``previous_response_id`` chain that goes
on from it reaches the upstream's stored response (when it was stored there); streamed, it is replayed as the events
OpenAI sends (``response.created`` … ``response.completed``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from compression import CompressionOptions, compress, count_text_tokens
from providers import responses_api as rapi
from providers.interface import Served
from router.http.parsing import ResponsesRequest
from router.pipeline.api_scope import response_complete, responses_cache_body
from router.pipeline.chat import level_for
from router.pipeline.context import Context
from router.pipeline.flow import Api, handle
from router.pipeline.steps import Call, Compressed

_PLAIN_ITEM_KEYS = {"role", "content", "type"}


def _plain_items(value: Any) -> list[dict[str, Any]] | None:
    """Input items that are plain messages of text only (what compression may rewrite), else None."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        return None
    for item in value:
        if not isinstance(item, dict) or set(item) - _PLAIN_ITEM_KEYS or item.get("type", "message") != "message" \
                or not isinstance(item.get("content"), str) or item.get("role") not in ("user", "assistant"):
            return None
    return [{"role": item["role"], "content": item["content"]} for item in value]


_TEXT_KEYS = ("text", "output", "arguments", "content", "refusal")
_IMAGE_TOKENS = 85  # as compression counts an image (low detail): its bytes are never tokenised


def _estimate(value: Any, model: str) -> int:
    """Tokens of the text in any input item (images and files at a fixed estimate, never their bytes)."""
    if isinstance(value, list):
        return sum(_estimate(item, model) for item in value)
    if not isinstance(value, dict):
        return count_text_tokens(value, model) if isinstance(value, str) else 0
    if value.get("type") in ("input_image", "input_file", "input_audio"):
        return _IMAGE_TOKENS
    return sum(_estimate(value[key], model) for key in _TEXT_KEYS if key in value)


async def prepare(ctx: Context, request: web.Request, call: Call, body: dict[str, Any]) -> Compressed:
    items = _plain_items(body.get("input"))
    instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else ""
    if items is None:
        tokens = count_text_tokens(instructions or "", call.model) + _estimate(body.get("input"), call.model)
        return Compressed(body=body, tokens_original=tokens, tokens_sent=tokens)
    settings = ctx.settings.compression
    options = CompressionOptions(auto_min_tokens=settings.auto_min_tokens, auto_ratio=settings.auto_ratio,
                                 auto_scorer=settings.auto_scorer)
    embed = ctx.embedder.embed if ctx.embedder is not None else None
    messages, report = await compress(items, level=level_for(ctx, request, call), model=call.model, embed=embed,
                                      options=options)
    extra = count_text_tokens(instructions, call.model) if instructions else 0
    sent = body
    if messages is not items:
        new_input: Any = messages[0]["content"] if isinstance(body["input"], str) and len(messages) == 1 else [
            {"role": m["role"], "content": m["content"]} for m in messages]
        sent = {**body, "input": new_input}
    saved = max(0, report.tokens_original - report.tokens_sent)
    return Compressed(body=sent, tokens_original=report.tokens_original + extra,
                      tokens_sent=report.tokens_sent + extra,
                      saved_usd=ctx.provider.cost(Served(), call.model, saved, 0) if saved else 0.0)


def _budget(ctx: Context, compressed: Compressed) -> int:
    return int(compressed.body.get("max_output_tokens") or ctx.settings.limits.default_max_tokens)


def _usage(response: dict[str, Any]) -> tuple[int | None, int]:
    usage = response.get("usage") or {}
    prompt = usage.get("input_tokens")
    return (int(prompt) if prompt is not None else None), int(usage.get("output_tokens") or 0)


class ResponseFold:
    """The Responses API's events, sent as they come; the whole response is the one its last event carries."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.final: dict[str, Any] | None = None
        self.deltas: list[str] = []

    def feed(self, item: dict[str, Any]) -> dict[str, Any] | None:
        kind = item.get("type")
        if kind == "response.output_text.delta" and isinstance(item.get("delta"), str):
            self.deltas.append(item["delta"])
        if kind in ("response.completed", "response.incomplete") and isinstance(item.get("response"), dict):
            self.final = item["response"]
        return item

    def carries_text(self, item: dict[str, Any]) -> bool:
        return item.get("type") in ("response.output_text.delta", "response.function_call_arguments.delta",
                                    "response.refusal.delta")

    def usage(self) -> tuple[int | None, int | None]:
        if self.final is None or not self.final.get("usage"):
            return None, None
        return _usage(self.final)

    def text(self) -> str:
        return "".join(self.deltas)

    def whole(self) -> dict[str, Any] | None:
        return self.final


async def _call_json(ctx: Context, body: dict[str, Any], headers: dict[str, str]) -> tuple[dict[str, Any], Served]:
    return await ctx.provider.respond(body, headers)


def _call_stream(ctx: Context, body: dict[str, Any], served: Served,
                 headers: dict[str, str]) -> AsyncGenerator[dict[str, Any], None]:
    return ctx.provider.respond_stream(body, served, headers)


def _error_event(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error") or {}
    return {"type": "error", "code": error.get("code"), "message": error.get("message"), "param": error.get("param")}


API = Api(route="responses", request_model=ResponsesRequest, request_body=lambda body: body.get("input"),
          prepare=prepare, budget=_budget, cache_body=responses_cache_body, complete=response_complete,
          usage=_usage, call_json=_call_json, call_stream=_call_stream, fold=ResponseFold,
          hit_json=lambda stored: stored, replay=lambda stored, body: rapi.replay_events(stored),
          named_events=True, error_event=_error_event)


async def responses(request: web.Request) -> web.StreamResponse:
    return await handle(request, API)
