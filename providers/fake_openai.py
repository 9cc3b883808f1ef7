"""A real fake OpenAI server for tests and benchmarks: chat completions, embeddings, models, and (through
``providers/fake_apis.py``) the Responses API and the legacy Completions API.

It is an aiohttp server on 127.0.0.1 (port 0 by default). Each request takes the next scripted
``Behaviour`` (``server.script(...)``) or the server's ``default``; it can answer, stream with usage,
return an error status, hang, or cut a stream midway. Everything received is recorded in ``server.received``,
and a client that goes away is counted in ``server.disconnects`` (and sets ``server.client_gone``).

    async with FakeOpenAI() as upstream:
        upstream.script(Behaviour(kind="error", status=500))
        ... point LiteLLM at upstream.base_url ...
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from providers.fake_apis import CompletionsSpeaker, ResponsesSpeaker

Kind = Literal["answer", "error", "hang", "cut"]


@dataclass
class Behaviour:
    """What the fake does with one request. ``stream`` follows the request unless forced."""

    kind: Kind = "answer"
    content: str | None = None  # None: "Answer to: <last user message>"
    tool_calls: list[dict[str, Any]] | None = None
    status: int = 500  # for kind="error"
    error_message: str = "fake upstream error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the first byte
    chunk_delay: float = 0.0  # between stream chunks
    cut_after: int = 2  # for kind="cut": content chunks sent before the connection is dropped
    usage: dict[str, int] | None = None  # None: computed from words
    finish_reason: str | None = None
    include_usage_always: bool = False


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    peer: tuple[Any, ...] = ()  # the client's address: the same one for requests on one kept-alive connection


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(m.get("content") or "").split()) for m in messages)


class FakeOpenAI:
    def __init__(self, *, default: Behaviour | None = None, model: str = "gpt-4o-mini") -> None:
        self.default = default or Behaviour()
        self.model = model
        self.received: list[Received] = []
        self.disconnects = 0
        self.client_gone = asyncio.Event()
        self.completed_streams = 0
        self._script: deque[Behaviour] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/embeddings", self._embeddings)
        for path in ("/v1/responses", "/responses"):
            app.router.add_post(path, self._responses)
        for path in ("/v1/completions", "/completions"):
            app.router.add_post(path, self._text_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        self.app = app

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        self._script.extend(behaviours)

    async def start(self, port: int = 0) -> FakeOpenAI:
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_client_gone(self, timeout: float = 5.0) -> bool:
        try:
            await asyncio.wait_for(self.client_gone.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _next(self) -> Behaviour:
        return self._script.popleft() if self._script else self.default

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        self.received.append(Received(request.path, body, dict(request.headers), tuple(peer or ())))
        return body

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next()
        try:
            refused = await self._before_answer(behaviour)
            if refused is not None:
                return refused
            if body.get("stream"):
                return await self._stream(request, body, behaviour)
            return web.json_response(self._completion(body, behaviour), headers=behaviour.headers)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            self.client_gone.set()
            raise

    async def _before_answer(self, behaviour: Behaviour) -> web.Response | None:
        """Wait as the behaviour says (its delay; for ever when it hangs), then its error answer, if any."""
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.kind == "hang":
            await asyncio.sleep(3600)
        return self._error(behaviour) if behaviour.kind == "error" else None

    def _error(self, behaviour: Behaviour) -> web.Response:
        error = {"error": {"message": behaviour.error_message, "type": "fake_error", "param": None, "code": None}}
        return web.json_response(error, status=behaviour.status, headers=behaviour.headers)

    def _answer(self, body: dict[str, Any], behaviour: Behaviour) -> str:
        if behaviour.content is not None:
            return behaviour.content
        return f"Answer to: {_last_user_text(body.get('messages') or [])}"

    def _usage(self, body: dict[str, Any], behaviour: Behaviour, text: str) -> dict[str, int]:
        if behaviour.usage is not None:
            return dict(behaviour.usage)
        prompt = _words(body.get("messages") or [])
        completion = max(1, len(text.split()))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
        text = self._answer(body, behaviour)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = behaviour.finish_reason or "stop"
        if behaviour.tool_calls:
            message["content"] = None
            message["tool_calls"] = behaviour.tool_calls
            finish = behaviour.finish_reason or "tool_calls"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": self._usage(body, behaviour, text),
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: Behaviour) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
        await response.prepare(request)
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body.get("model", self.model)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_fake", "choices": [choice]}

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())
            if behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)

        text = self._answer(body, behaviour)
        await send(chunk({"role": "assistant", "content": ""}))
        finish = behaviour.finish_reason or "stop"
        if behaviour.tool_calls:
            finish = behaviour.finish_reason or "tool_calls"
            for i, call in enumerate(behaviour.tool_calls):
                head = {"index": i, "id": call["id"], "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""}}
                await send(chunk({"tool_calls": [head]}))
                args = call["function"]["arguments"]
                for part in (args[: len(args) // 2], args[len(args) // 2:]):
                    await send(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
        else:
            pieces = [w + " " for w in text.split(" ")]
            pieces[-1] = pieces[-1].rstrip(" ")
            for n, piece in enumerate(pieces):
                if behaviour.kind == "cut" and n >= behaviour.cut_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await send(chunk({"content": piece}))
        await send(chunk({}, finish))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage or behaviour.include_usage_always:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(body, behaviour, text)
            await send(usage_chunk)
        await send("[DONE]")
        await response.write_eof()
        self.completed_streams += 1
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "responses")

    async def _text_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completions")

    async def _serve(self, request: web.Request, api: Literal["responses", "completions"]) -> web.StreamResponse:
        """``/v1/responses`` and ``/v1/completions``, with the same behaviours as chat (see ``fake_apis``)."""
        body = await self._record(request)
        behaviour = self._next()
        try:
            refused = await self._before_answer(behaviour)
            if refused is not None:
                return refused
            speaker = ResponsesSpeaker(body, behaviour) if api == "responses" else CompletionsSpeaker(body, behaviour)
            if not body.get("stream"):
                return web.json_response(speaker.whole(), headers=behaviour.headers)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **behaviour.headers})
            await response.prepare(request)
            for n, event in enumerate(speaker.events()):
                if behaviour.kind == "cut" and n >= behaviour.cut_after + 2:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(event)
                if behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
            await response.write_eof()
            self.completed_streams += 1
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            self.client_gone.set()
            raise

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        behaviour = self._next()
        refused = await self._before_answer(behaviour)
        if refused is not None:
            return refused
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255.0 for b in digest[:8]]})
        tokens = sum(len(str(item).split()) for item in items)
        return web.json_response({"object": "list", "data": data, "model": body.get("model", self.model),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})


def main() -> None:
    """``python -m providers.fake_openai --port P``: run the fake on its own (benchmarks use it as a process)."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()

    async def run() -> None:
        server = await FakeOpenAI(default=Behaviour(delay=args.delay)).start(args.port)
        print(server.port, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
