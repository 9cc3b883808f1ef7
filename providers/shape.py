"""LiteLLM's response objects → exactly OpenAI's JSON shape.

LiteLLM adds fields OpenAI never sends (``provider_specific_fields``, ``function_call: null``, ``audio: null``,
``citations`` …) and puts the usage of a stream on a chunk with an empty choice. These functions keep OpenAI's
fields only, so what a client reads through deja is what it would read from OpenAI.
"""

from __future__ import annotations

from typing import Any

_TOP = ("id", "object", "created", "model", "system_fingerprint", "service_tier")
_MESSAGE_OPTIONAL = ("tool_calls", "function_call", "audio", "annotations", "reasoning_content")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _clean_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        details = usage.get(key)
        if isinstance(details, dict):
            cleaned = _drop_none(details)
            if cleaned:
                out[key] = cleaned
    return out


def _clean_tool_call(call: dict[str, Any], *, streamed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if streamed and call.get("index") is not None:
        out["index"] = call["index"]
    if call.get("id") is not None:
        out["id"] = call["id"]
    if call.get("type") is not None or not streamed:
        out["type"] = call.get("type") or "function"
    function = call.get("function") or {}
    fn = _drop_none({"name": function.get("name"), "arguments": function.get("arguments")})
    if not streamed:
        fn.setdefault("arguments", "")
    if fn or not streamed:
        out["function"] = fn
    return out


def _refusal(message: dict[str, Any]) -> Any:
    if message.get("refusal") is not None:
        return message["refusal"]
    return (message.get("provider_specific_fields") or {}).get("refusal")


def clean_message(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content"),
                           "refusal": _refusal(message)}
    for key in _MESSAGE_OPTIONAL:
        value = message.get(key)
        if value:
            out[key] = value
    if "tool_calls" in out:
        out["tool_calls"] = [_clean_tool_call(c, streamed=False) for c in out["tool_calls"]]
    return out


def clean_completion(response: dict[str, Any]) -> dict[str, Any]:
    out = _drop_none({k: response.get(k) for k in _TOP})
    out["object"] = "chat.completion"
    out["choices"] = [
        {"index": c.get("index", i), "message": clean_message(c.get("message") or {}),
         "logprobs": c.get("logprobs"), "finish_reason": c.get("finish_reason")}
        for i, c in enumerate(response.get("choices") or [])
    ]
    usage = _clean_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def _clean_delta(delta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.get("role"):
        out["role"] = delta["role"]
    if delta.get("content") is not None:
        out["content"] = delta["content"]
    refusal = _refusal(delta)
    if refusal is not None:
        out["refusal"] = refusal
    if delta.get("tool_calls"):
        out["tool_calls"] = [_clean_tool_call(c, streamed=True) for c in delta["tool_calls"]]
    for key in ("function_call", "audio", "reasoning_content"):
        if delta.get(key):
            out[key] = delta[key]
    return out


def clean_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """One ``chat.completion.chunk``. A usage-only chunk gets ``choices: []`` as OpenAI sends it."""
    out = _drop_none({k: chunk.get(k) for k in _TOP})
    out["object"] = "chat.completion.chunk"
    choices = []
    for i, c in enumerate(chunk.get("choices") or []):
        delta = _clean_delta(c.get("delta") or {})
        choice = {"index": c.get("index", i), "delta": delta, "logprobs": c.get("logprobs"),
                  "finish_reason": c.get("finish_reason")}
        choices.append(choice)
    usage = _clean_usage(chunk.get("usage"))
    if usage is not None and all(not c["delta"] and c["finish_reason"] is None for c in choices):
        choices = []
    out["choices"] = choices
    if usage is not None:
        out["usage"] = usage
    return out


def is_empty_chunk(chunk: dict[str, Any]) -> bool:
    """A chunk that carries nothing for the client (no delta, no finish, no usage)."""
    return "usage" not in chunk and all(not c["delta"] and c["finish_reason"] is None for c in chunk["choices"])


def _clean_details(usage: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = dict(usage)
    out.pop("cost", None)  # LiteLLM's own field
    for key in keys:
        if isinstance(out.get(key), dict):
            out[key] = _drop_none(out[key])
    return out


def clean_response(response: dict[str, Any]) -> dict[str, Any]:
    """A Responses API ``response`` object: LiteLLM's ``usage.cost`` and null token details dropped."""
    out = dict(response)
    if isinstance(out.get("usage"), dict):
        out["usage"] = _clean_details(out["usage"], ("input_tokens_details", "output_tokens_details"))
    return out


def clean_response_event(event: dict[str, Any]) -> dict[str, Any]:
    """One Responses API stream event; the ``response`` it may carry is cleaned as ``clean_response``."""
    if isinstance(event.get("response"), dict):
        return {**event, "response": clean_response(event["response"])}
    return event


def _text_choice(choice: dict[str, Any], index: int) -> dict[str, Any]:
    return {"text": choice.get("text") or "", "index": choice.get("index", index), "logprobs": choice.get("logprobs"),
            "finish_reason": choice.get("finish_reason")}


def clean_text_completion(response: dict[str, Any]) -> dict[str, Any]:
    """A legacy ``text_completion`` exactly as OpenAI sends it."""
    out = _drop_none({k: response.get(k) for k in _TOP})
    out["object"] = "text_completion"
    out["choices"] = [_text_choice(c, i) for i, c in enumerate(response.get("choices") or [])]
    usage = _clean_usage(response.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def clean_text_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk (usage, if any, left for the caller to place on a last chunk)."""
    out = _drop_none({k: chunk.get(k) for k in _TOP if k != "service_tier"})
    out["object"] = "text_completion"
    out["choices"] = [_text_choice(c, i) for i, c in enumerate(chunk.get("choices") or [])]
    usage = _clean_usage(chunk.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out
