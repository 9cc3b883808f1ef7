"""The fake upstream's Responses API and legacy Completions API answers (used by ``providers/fake_openai.py``).

Each speaker turns one request and its scripted ``Behaviour`` into OpenAI's JSON answer (``whole``) or OpenAI's
event stream (``events``, encoded SSE frames): for ``/v1/responses`` named events (``response.created`` …
``response.completed``, each with a ``sequence_number``), for ``/v1/completions`` ``data:`` chunks and ``[DONE]``.
The answer text is the behaviour's ``content``, else ``Answer to: <the input's last user text>``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from providers.fake_openai import Behaviour


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def responses_input_text(value: Any) -> str:
    """The last user text of a Responses API ``input`` (a string, or a list of message items)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in reversed(value):
            if isinstance(item, dict) and item.get("role") == "user":
                return _text_of(item.get("content"))
    return ""


def _pieces(text: str) -> list[str]:
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip(" ")
    return pieces


class ResponsesSpeaker:
    def __init__(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        self.body = body
        self.text = behaviour.content if behaviour.content is not None else \
            f"Answer to: {responses_input_text(body.get('input'))}"
        self.usage = behaviour.usage
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.incomplete = behaviour.finish_reason == "length"

    def _usage(self) -> dict[str, Any]:
        if self.usage is not None:
            prompt, completion = self.usage.get("prompt_tokens", 0), self.usage.get("completion_tokens", 0)
        else:
            prompt = len(json.dumps(self.body.get("input") or "").split()) + \
                len(str(self.body.get("instructions") or "").split())
            completion = max(1, len(self.text.split()))
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}

    def _message(self, text: str, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"), "output": output, "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def _final_status(self) -> str:
        return "incomplete" if self.incomplete else "completed"

    def whole(self) -> dict[str, Any]:
        return self._response(self._final_status(), [self._message(self.text, "completed")], self._usage())

    def events(self) -> Iterator[bytes]:
        sequence = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal sequence
            payload = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield event("response.created", response=self._response("in_progress", [], None))
        yield event("response.in_progress", response=self._response("in_progress", [], None))
        yield event("response.output_item.added", output_index=0, item=self._message("", "in_progress"))
        yield event("response.content_part.added", part=part, **where)
        for piece in _pieces(self.text):
            yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
        yield event("response.output_text.done", text=self.text, logprobs=[], **where)
        yield event("response.content_part.done", part={**part, "text": self.text}, **where)
        item = self._message(self.text, "completed")
        yield event("response.output_item.done", output_index=0, item=item)
        final = self._final_status()
        yield event(f"response.{final}", response=self._response(final, [item], self._usage()))


class CompletionsSpeaker:
    def __init__(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        self.body = body
        prompt = body.get("prompt")
        last = prompt[-1] if isinstance(prompt, list) and prompt else prompt
        self.text = behaviour.content if behaviour.content is not None else f" Answer to: {last}"
        self.usage = behaviour.usage
        self.finish = behaviour.finish_reason or "stop"
        self.always_usage = behaviour.include_usage_always
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _usage(self) -> dict[str, int]:
        if self.usage is not None:
            return dict(self.usage)
        prompt = len(json.dumps(self.body.get("prompt") or "").split())
        completion = max(1, len(self.text.split()))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.body.get("model"),
                "system_fingerprint": "fp_fake", "choices": choices}

    def whole(self) -> dict[str, Any]:
        choice = {"text": self.text, "index": 0, "logprobs": None, "finish_reason": self.finish}
        return {**self._envelope([choice]), "usage": self._usage()}

    def events(self) -> Iterator[bytes]:
        def frame(payload: dict[str, Any] | str) -> bytes:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            return f"data: {data}\n\n".encode()

        for piece in _pieces(self.text):
            yield frame(self._envelope([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]))
        yield frame(self._envelope([{"text": "", "index": 0, "logprobs": None, "finish_reason": self.finish}]))
        if (self.body.get("stream_options") or {}).get("include_usage") or self.always_usage:
            yield frame({**self._envelope([]), "usage": self._usage()})
        yield frame("[DONE]")
