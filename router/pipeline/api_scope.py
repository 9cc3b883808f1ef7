"""The Responses and legacy Completions requests in the chat shape the cache keys (``cache.build_scope``) read.

The cache's Scope and exact key are defined over a chat request: its messages and every other field. These
functions give each API's request that shape: a plain-text input becomes chat messages (so the last user text
can be a semantic query); anything else (images, function-call outputs, token arrays, several prompts) becomes one
opaque user part, which the cache matches exactly and never semantically. ``deja_endpoint`` keeps the APIs apart:
their answers have different shapes, so a chat answer never serves a Responses request.
"""

from __future__ import annotations

from typing import Any

from providers.responses_api import input_messages

_ENDPOINT = "deja_endpoint"


def responses_cache_body(body: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in body.items() if k not in ("input", "instructions")}
    messages = input_messages(body)
    if messages is None:
        messages = [{"role": "user", "content": [{"type": "responses_input", "instructions": body.get("instructions"),
                                                  "input": body.get("input")}]}]
    return {**rest, _ENDPOINT: "responses", "messages": messages}


def completions_cache_body(body: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in body.items() if k != "prompt"}
    prompt = body.get("prompt")
    content: Any = prompt if isinstance(prompt, str) else [{"type": "prompt", "prompt": prompt}]
    return {**rest, _ENDPOINT: "completions", "messages": [{"role": "user", "content": content}]}


def response_complete(response: dict[str, Any]) -> bool:
    """A Responses answer worth storing: completed, or cut by ``max_output_tokens`` (as chat stores ``length``)."""
    status = response.get("status")
    details = response.get("incomplete_details") or {}
    return status == "completed" or (status == "incomplete" and details.get("reason") == "max_output_tokens")


def text_completion_complete(response: dict[str, Any]) -> bool:
    choices = response.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") in ("stop", "length") for c in choices)
