"""OpenAI's Responses API shapes: its input as chat messages, a chat answer as a ``response``, its event stream.

- ``input_messages``: a request's ``instructions`` and ``input`` as chat messages, when they are plain messages
  (text only); ``None`` otherwise (function-call outputs, images, reasoning items, item references …).
- ``chat_to_response``: a chat completion as a ``response`` object (the offline ``sim`` model answers the
  Responses API through chat; LiteLLM's own bridge cannot route a custom provider).
- ``ResponseEvents`` / ``replay_events``: the event stream OpenAI sends (``response.created``,
  ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta`` …, ``response.completed``), each with its ``sequence_number``; built incrementally
  for a live stream, or from a whole ``response`` to replay a cache hit.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

_TEXT_PARTS = {"input_text", "output_text", "text"}


def _message_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "\n".join(texts)


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``instructions`` + ``input`` as chat messages, or None when the input is more than plain text messages."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        return None
    for item in value:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            return None
        role, text = item.get("role"), _message_text(item.get("content"))
        if role not in ("user", "assistant", "system", "developer") or text is None:
            return None
        messages.append({"role": "system" if role == "developer" else role, "content": text})
    return messages


def _usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt, completion = int(chat_usage.get("prompt_tokens") or 0), int(chat_usage.get("completion_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def response_skeleton(body: dict[str, Any], *, model: str, response_id: str | None = None) -> dict[str, Any]:
    """A ``response`` in progress, with the request's settings echoed as OpenAI echoes them."""
    return {
        "id": response_id or f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": "in_progress", "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": model, "output": [],
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "store": bool(body.get("store", False)),
        "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": None,
        "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def message_item(text: str, *, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"id": item_id or f"msg_{uuid.uuid4().hex}", "type": "message", "status": status, "role": "assistant",
            "content": content}


def finished(skeleton: dict[str, Any], text: str, finish_reason: str | None, chat_usage: dict[str, Any] | None,
             *, item_id: str | None = None) -> dict[str, Any]:
    """The whole ``response`` for a text answer (``length`` → ``incomplete``, as OpenAI reports it)."""
    incomplete = finish_reason == "length"
    return {**skeleton, "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "output": [message_item(text, item_id=item_id)], "usage": _usage(chat_usage)}


def chat_to_response(completion: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    skeleton = response_skeleton(body, model=str(completion.get("model") or body.get("model")))
    return finished(skeleton, text, choice.get("finish_reason"), completion.get("usage"))


class ResponseEvents:
    """Numbers the events of one stream and builds each as OpenAI sends it."""

    def __init__(self) -> None:
        self.sequence = 0

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return payload

    def opening(self, skeleton: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.event("response.created", response=skeleton),
                self.event("response.in_progress", response=skeleton)]

    def text_start(self, index: int, item_id: str) -> list[dict[str, Any]]:
        part = {"type": "output_text", "text": "", "annotations": []}
        return [self.event("response.output_item.added", output_index=index,
                           item=message_item("", item_id=item_id, status="in_progress")),
                self.event("response.content_part.added", item_id=item_id, output_index=index, content_index=0,
                           part=part)]

    def text_delta(self, index: int, item_id: str, delta: str, content_index: int = 0) -> dict[str, Any]:
        return self.event("response.output_text.delta", item_id=item_id, output_index=index,
                          content_index=content_index, delta=delta, logprobs=[])

    def text_end(self, index: int, item: dict[str, Any], text: str) -> list[dict[str, Any]]:
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [self.event("response.output_text.done", text=text, logprobs=[], **where),
                self.event("response.content_part.done", part={"type": "output_text", "text": text,
                                                               "annotations": []}, **where),
                self.event("response.output_item.done", output_index=index, item=item)]

    def item(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        """An output item other than text (a function call, reasoning …): added, its arguments, done."""
        events = [self.event("response.output_item.added", output_index=index,
                             item={**item, "status": "in_progress"})]
        if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
            where = {"item_id": item.get("id"), "output_index": index}
            events.append(self.event("response.function_call_arguments.delta", delta=item["arguments"], **where))
            events.append(self.event("response.function_call_arguments.done", arguments=item["arguments"], **where))
        events.append(self.event("response.output_item.done", output_index=index, item=item))
        return events

    def closing(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(response.get("status", ""),
                                                                                     "response.completed")
        return [self.event(kind, response=response)]


def _plain_text_message(item: dict[str, Any]) -> str | None:
    if item.get("type") != "message" or not isinstance(item.get("id"), str):
        return None
    content = item.get("content") or []
    if len(content) != 1 or content[0].get("type") != "output_text" or content[0].get("annotations"):
        return None
    text = content[0].get("text")
    return text if isinstance(text, str) else None


def replay_events(response: dict[str, Any], *, words_per_delta: int = 4) -> list[dict[str, Any]]:
    """A whole ``response`` as the event stream OpenAI would have sent for it."""
    events = ResponseEvents()
    skeleton = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    out = events.opening(skeleton)
    for index, item in enumerate(response.get("output") or []):
        text = _plain_text_message(item)
        if text is None:
            out += events.item(index, item)
            continue
        out += events.text_start(index, item["id"])
        words = text.split(" ")
        for start in range(0, len(words), words_per_delta):
            piece = " ".join(words[start:start + words_per_delta])
            out.append(events.text_delta(index, item["id"], piece if start == 0 else " " + piece))
        out += events.text_end(index, item, text)
    return out + events.closing(response)


def output_text(response: dict[str, Any]) -> str:
    """The text of a ``response``'s messages (what the SDK's ``output_text`` gives)."""
    return "".join(part.get("text", "") for item in response.get("output") or [] if item.get("type") == "message"
                   for part in item.get("content") or [] if part.get("type") == "output_text")
