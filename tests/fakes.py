"""An in-process ``Provider`` (providers.interface) for the pipeline's unit tests: no HTTP, no LiteLLM.

Each call takes the next scripted step (``provider.script(...)``): an answer text, a ``ProviderError`` to raise
before anything is sent, or ``Cut(after=n, error=...)`` for a stream that fails after ``n`` content chunks.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers import responses_api as rapi
from providers.errors import ProviderError, UnknownModelError
from providers.interface import Served


@dataclass
class Cut:
    after: int
    error: ProviderError = field(default_factory=lambda: ProviderError("stream cut", upstream_status=502))


Step = str | Exception | Cut  # an exception is raised before anything is sent
_DEFAULT = "the fake answer"


class FakeProvider:
    def __init__(self, groups: Sequence[str] = ("fake-model",), *, prompt_price: float = 1e-6,
                 completion_price: float = 2e-6) -> None:
        self._groups = sorted(groups)
        self.prices = (prompt_price, completion_price)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []  # what each call was given to forward (trace context, request id)
        self._script: deque[Step] = deque()
        self.closed_streams = 0

    def script(self, *steps: Step) -> None:
        self._script.extend(steps)

    def _next(self, body: dict[str, Any]) -> Step:
        return self._script.popleft() if self._script else _DEFAULT

    @property
    def groups(self) -> Sequence[str]:
        return self._groups

    def has_model(self, name: str) -> bool:
        return name in self._groups

    def resolve(self, name: str) -> str:
        return name

    def listed_models(self) -> Sequence[str]:
        return self._groups

    def supports_embeddings(self, name: str) -> bool:
        return True

    def check_model(self, name: str) -> None:
        if not self.has_model(name):
            raise UnknownModelError(f"The model `{name}` does not exist or you do not have access to it.")

    def first_deployment(self, group: str) -> str | None:
        return f"{group}#0"

    def cost(self, served: Served, group: str, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]

    def _served(self, body: dict[str, Any]) -> Served:
        return Served(deployment=f"{body['model']}#0", provider="fake", litellm_model=f"fake/{body['model']}")

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None
                       ) -> tuple[dict[str, Any], Served]:
        self.calls.append(("complete", body))
        self.headers.append(dict(headers or {}))
        step = self._next(body)
        if isinstance(step, Exception):
            raise step
        text = step if isinstance(step, str) else "partial"
        usage = {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 11 + len(text.split())}
        served = self._served(body)
        served.cost_usd = self.cost(served, body["model"], usage["prompt_tokens"], usage["completion_tokens"])
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}]}, served

    async def stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                     ) -> AsyncGenerator[dict[str, Any], None]:
        self.calls.append(("stream", body))
        self.headers.append(dict(headers or {}))
        step = self._next(body)
        if isinstance(step, Exception):
            raise step
        found = self._served(body)
        served.deployment, served.provider, served.litellm_model = found.deployment, found.provider, found.litellm_model
        words = (step if isinstance(step, str) and step != _DEFAULT else "one two three four five").split()
        try:
            for i, word in enumerate(words):
                if isinstance(step, Cut) and i == step.after:
                    raise step.error
                yield {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
            yield {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                   "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(words),
                                            "total_tokens": 11 + len(words)}}
        finally:
            self.closed_streams += 1

    async def embed(self, body: dict[str, Any], headers: dict[str, str] | None = None
                    ) -> tuple[dict[str, Any], Served]:
        self.calls.append(("embed", body))
        self.headers.append(dict(headers or {}))
        step = self._next(body)
        if isinstance(step, Exception):
            raise step
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        served = self._served(body)
        served.cost_usd = self.cost(served, body["model"], 3 * len(inputs), 0)
        return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 3 * len(inputs),
                                                                    "total_tokens": 3 * len(inputs)},
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(len(inputs))]
                }, served

    async def respond(self, body: dict[str, Any], headers: dict[str, str] | None = None
                      ) -> tuple[dict[str, Any], Served]:
        """The Responses API as the gateway's sim answers it: the chat answer as a ``response``."""
        chat = {"model": body["model"], "messages": rapi.input_messages(body) or []}
        completion, served = await self.complete(chat, headers)
        return rapi.chat_to_response(completion, body), served

    async def respond_stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                             ) -> AsyncGenerator[dict[str, Any], None]:
        response, found = await self.respond(body, headers)
        served.deployment, served.provider = found.deployment, found.provider
        for event in rapi.replay_events(response):
            yield event

    async def complete_text(self, body: dict[str, Any], headers: dict[str, str] | None = None
                            ) -> tuple[dict[str, Any], Served]:
        completion, served = await self.complete({"model": body["model"],
                                                  "messages": [{"role": "user", "content": str(body["prompt"])}]},
                                                 headers)
        choice = completion["choices"][0]
        return {"id": "cmpl-fake", "object": "text_completion", "created": completion["created"],
                "model": body["model"], "usage": completion["usage"],
                "choices": [{"text": choice["message"]["content"], "index": 0, "logprobs": None,
                             "finish_reason": choice["finish_reason"]}]}, served

    async def complete_text_stream(self, body: dict[str, Any], served: Served,
                                   headers: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        whole, found = await self.complete_text(body, headers)
        served.deployment, served.provider = found.deployment, found.provider
        head = {k: whole[k] for k in ("id", "object", "created", "model")}
        yield {**head, "choices": [{**whole["choices"][0], "finish_reason": None}]}
        yield {**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]}
        yield {**head, "choices": [], "usage": whole["usage"]}

    async def ping(self) -> dict[str, bool]:
        return {f"{g}#0": True for g in self._groups}

    async def close(self) -> None:
        return None
