"""Server-Sent Events exactly as OpenAI sends them, in one helper.

``text/event-stream``, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``; ``data: {chunk}`` events and
``data: [DONE]``; ``: keep-alive`` comments while the upstream is silent; an error after the headers are sent goes
in-band as ``data: {"error": …}`` then ``data: [DONE]``. A heartbeat timer sends ``: keep-alive`` while the
upstream is silent; when the client goes away aiohttp cancels the handler, and with it the pending upstream read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

FINISH_OK = {"stop", "length", "tool_calls", "function_call", "content_filter"}
CACHEABLE_FINISH = {"stop", "length", "tool_calls"}


class SSEWriter:
    def __init__(self, request: web.Request, headers: dict[str, str]) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200, headers={
            **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", "Connection": "keep-alive"})
        self.prepared = False
        self.last_write = 0.0
        self._prepare_lock = asyncio.Lock()
        self._interval = 0.0
        self._beat: asyncio.TimerHandle | None = None
        self._ping: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        if self.prepared:
            return
        async with self._prepare_lock:  # the heartbeat may be preparing too
            if not self.prepared:
                try:
                    await self.response.prepare(self.request)
                except ConnectionResetError as exc:
                    raise asyncio.CancelledError("the client closed the connection") from exc
                self.prepared = True

    def start_heartbeat(self, interval: float) -> None:
        """Send ``: keep-alive`` whenever ``interval`` seconds pass without a write, until ``stop_heartbeat``.

        One timer per stream, re-armed from the time of the last write: nothing is spent per chunk (a timeout
        around each upstream read costs a task and a timer per token)."""
        loop = asyncio.get_running_loop()
        self._interval = interval
        self.last_write = loop.time()
        self._beat = loop.call_later(interval, self._on_beat, loop)

    def stop_heartbeat(self) -> None:
        """No more pings. One already writing is left to finish: cancelling it mid-drain would cancel aiohttp's
        shared drain future and fail the stream's own next write."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _on_beat(self, loop: asyncio.AbstractEventLoop) -> None:
        idle = loop.time() - self.last_write
        if idle >= self._interval:
            if self._ping is None or self._ping.done():
                self._ping = loop.create_task(self._send_ping())
            idle = 0.0
        self._beat = loop.call_later(self._interval - idle, self._on_beat, loop)

    async def _send_ping(self) -> None:
        try:
            await self.keepalive()
        except (asyncio.CancelledError, Exception):  # a gone client: the stream's own task sees it and ends
            pass

    async def send(self, payload: dict[str, Any]) -> None:
        await self.prepare()
        await self._write(b"data: " + orjson.dumps(payload) + b"\n\n")

    async def send_event(self, payload: dict[str, Any]) -> None:
        """A named event (``event: <type>`` then its data), as the Responses API streams."""
        await self.prepare()
        await self._write(b"event: " + str(payload.get("type", "message")).encode() + b"\ndata: "
                          + orjson.dumps(payload) + b"\n\n")

    async def keepalive(self) -> None:
        await self.prepare()
        await self._write(b": keep-alive\n\n")

    async def _write(self, data: bytes, *, eof: bool = False) -> None:
        """A client that went away is a cancellation (as when aiohttp notices first), not a server error."""
        self.last_write = asyncio.get_running_loop().time()
        try:
            await self.response.write(data)
            if eof:
                await self.response.write_eof()
        except ConnectionResetError as exc:
            raise asyncio.CancelledError("the client closed the connection") from exc

    async def error(self, body: dict[str, Any]) -> None:
        await self.send(body)
        await self.done()

    async def done(self, terminator: bytes = b"data: [DONE]\n\n") -> None:
        """End the stream (the Responses API ends with its last event: ``terminator=b""``)."""
        self.stop_heartbeat()
        if self._ping is not None and not self._ping.done():
            await asyncio.wait({self._ping})  # a ping mid-write ends before the stream does
        await self.prepare()
        await self._write(terminator, eof=True)


class StreamAccumulator:
    """Rebuilds the whole completion from a stream's chunks (for the cache and the usage record)."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.content_chunks = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            slot = self.choices.setdefault(choice.get("index", 0), {"content": [], "tools": {}, "finish": None,
                                                                     "refusal": None})
            delta = choice.get("delta") or {}
            if delta.get("content"):
                slot["content"].append(delta["content"])
                self.content_chunks += 1
            if delta.get("refusal"):
                slot["refusal"] = (slot["refusal"] or "") + delta["refusal"]
            for call in delta.get("tool_calls") or []:
                self.content_chunks += 1
                tool = slot["tools"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                       "function": {"name": "", "arguments": ""}})
                if call.get("id"):
                    tool["id"] = call["id"]
                function = call.get("function") or {}
                tool["function"]["name"] += function.get("name") or ""
                tool["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish"] = choice["finish_reason"]

    @property
    def text(self) -> str:
        return "".join("".join(slot["content"]) for slot in self.choices.values())

    @property
    def cacheable(self) -> bool:
        return bool(self.choices) and all(s["finish"] in CACHEABLE_FINISH for s in self.choices.values())

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(slot["content"]) or None,
                                       "refusal": slot["refusal"]}
            if slot["tools"]:
                message["tool_calls"] = [slot["tools"][i] for i in sorted(slot["tools"])]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": slot["finish"]})
        out = {**self.head, "object": "chat.completion", "choices": choices}
        if self.usage:
            out["usage"] = self.usage
        return out


def fresh_identity(response: dict[str, Any]) -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())


def replay_chunks(response: dict[str, Any], *, include_usage: bool, words_per_chunk: int = 4) -> list[dict[str, Any]]:
    """A stored completion as the chunks of a live stream: role, content, finish, usage if asked."""
    cid, created = fresh_identity(response)
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": response.get("model")}
    if response.get("system_fingerprint"):
        base["system_fingerprint"] = response["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    out: list[dict[str, Any]] = []
    for choice in response.get("choices") or []:
        index, message = choice.get("index", 0), choice.get("message") or {}
        out.append(chunk(index, {"role": "assistant", "content": ""}))
        words = (message.get("content") or "").split(" ")
        if message.get("content"):
            for start in range(0, len(words), words_per_chunk):
                piece = " ".join(words[start:start + words_per_chunk])
                out.append(chunk(index, {"content": piece if start == 0 else " " + piece}))
        for i, call in enumerate(message.get("tool_calls") or []):
            out.append(chunk(index, {"tool_calls": [{"index": i, "id": call.get("id"), "type": "function",
                                                     "function": call.get("function")}]}))
        out.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and response.get("usage"):
        out.append({**base, "choices": [], "usage": response["usage"]})
    return out
