"""OpenAI's Responses API and legacy Completions API through the Gateway's LiteLLM Router.

``respond`` / ``respond_stream`` call ``Router.aresponses`` (for ``openai/…`` deployments LiteLLM sends
``POST /v1/responses`` upstream; for providers without it, LiteLLM bridges through chat completions).
``complete_text`` / ``complete_text_stream`` call ``Router.atext_completion`` (LiteLLM sends ``POST /v1/completions``
for ``text-completion-openai/…`` deployments and OpenAI's instruct models, and turns the prompt into a chat
message for other models). A group only the offline ``sim`` model serves answers the Responses API through
chat (``providers/responses_api.py``). Results are OpenAI-shaped dicts plus a ``Served``, as ``Gateway.complete``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from providers import litellm_api
from providers import responses_api as rapi
from providers.errors import ProviderBadRequestError, ProviderError, UnsupportedError, translate
from providers.shape import clean_response, clean_response_event, clean_text_chunk, clean_text_completion

if TYPE_CHECKING:
    from providers.gateway import Gateway
    from providers.interface import Served


def _kwargs(gateway: Gateway, body: dict[str, Any], headers: dict[str, str] | None) -> dict[str, Any]:
    """The client's fields for the Router (never ``deja_body``: these calls have no direct path), and the request's
    headers to forward (``deja_headers``: merged with the deployment's ``extra_headers`` by ``DejaRouter``)."""
    from providers.gateway import client_fields

    kwargs = client_fields(gateway.routed(body))
    if isinstance(kwargs.get("metadata"), dict):
        kwargs["metadata"] = dict(kwargs["metadata"])  # the Router writes its own keys into it
    if headers:
        kwargs["deja_headers"] = dict(headers)
    return kwargs


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise translate(exc) from exc


def _fill(gateway: Gateway, served: Served, found: Served, model: str) -> None:
    """Copy what the stream's ``_hidden_params`` say (LiteLLM's text-completion streams carry none: the group's
    first deployment stands in)."""
    served.deployment = found.deployment or gateway.first_deployment(model)
    served.provider = found.provider
    served.litellm_model = found.litellm_model or gateway.litellm_model(model)


async def _iterate(upstream: Any) -> AsyncIterator[dict[str, Any]]:
    from providers.gateway import _close_stream

    try:
        async for item in upstream:
            yield item if isinstance(item, dict) else item.model_dump(mode="json", warnings=False)
    except (asyncio.CancelledError, GeneratorExit):
        await _close_stream(upstream)
        raise
    except ProviderError:
        raise
    except Exception as exc:
        await _close_stream(upstream)
        raise translate(exc) from exc


def _sim_chat(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("previous_response_id"):
        raise ProviderBadRequestError(f"model {body['model']} keeps no responses: previous_response_id cannot "
                                      f"be used with it")
    messages = rapi.input_messages(body)
    if messages is None:
        raise ProviderBadRequestError(f"model {body['model']} answers plain text input only (no tools, files or "
                                      f"previous items)")
    chat = {"model": body["model"], "messages": messages}
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                           ("top_p", "top_p"), ("user", "user")):
        if body.get(source) is not None:
            chat[target] = body[source]
    return chat


async def respond(gateway: Gateway, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> tuple[dict[str, Any], Served]:
    gateway.check_model(body["model"])
    if gateway.sim_only(body["model"]):
        completion, served = await gateway.complete(_sim_chat(gateway, body), headers)
        return rapi.chat_to_response(completion, body), served
    response = await _call(gateway.router.aresponses(**_kwargs(gateway, body, headers)))
    served = gateway.served(getattr(response, "_hidden_params", None), body["model"])
    data = clean_response(response.model_dump(mode="json", warnings=False))
    usage = data.get("usage") or {}
    served.cost_usd = gateway.cost(served, body["model"], int(usage.get("input_tokens") or 0),
                                   int(usage.get("output_tokens") or 0))
    return data, served


async def respond_stream(gateway: Gateway, body: dict[str, Any], served: Served,
                         headers: dict[str, str] | None = None) -> AsyncGenerator[dict, None]:
    """Yield the Responses API's events as dicts; ``served`` is filled in once the upstream answered."""
    gateway.check_model(body["model"])
    if gateway.sim_only(body["model"]):
        async for event in _sim_events(gateway, body, served, headers):
            yield event
        return
    upstream = await _call(gateway.router.aresponses(**_kwargs(gateway, {**body, "stream": True}, headers)))
    _fill(gateway, served, gateway.served(getattr(upstream, "_hidden_params", None), body["model"]), body["model"])
    async for event in _iterate(upstream):
        yield clean_response_event(event)


async def _sim_events(gateway: Gateway, body: dict[str, Any], served: Served,
                      headers: dict[str, str] | None) -> AsyncGenerator[dict, None]:
    chat = {**_sim_chat(gateway, body), "stream": True, "stream_options": {"include_usage": True}}
    events = rapi.ResponseEvents()
    skeleton = rapi.response_skeleton(body, model=body["model"])
    item_id = f"msg_{skeleton['id'].removeprefix('resp_')}"
    texts: list[str] = []
    usage, finish = None, None
    started = False
    async for chunk in gateway.stream(chat, served, headers):
        if not started:
            for event in events.opening(skeleton) + events.text_start(0, item_id):
                yield event
            started = True
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            finish = choice.get("finish_reason") or finish
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                texts.append(delta)
                yield events.text_delta(0, item_id, delta)
    text = "".join(texts)
    response = rapi.finished(skeleton, text, finish, usage, item_id=item_id)
    for event in events.text_end(0, response["output"][0], text) + events.closing(response):
        yield event


def _check_prompt(gateway: Gateway, body: dict[str, Any]) -> None:
    """A prompt of token ids reaches only a text-completion model as it is: for a chat model LiteLLM would have to
    turn it into a message, and fails (as an upstream error). It is the client's request that cannot be served."""
    gateway.check_model(body["model"])
    prompt = body.get("prompt")
    tokens = isinstance(prompt, list) and bool(prompt) and not all(isinstance(p, str) for p in prompt)
    models = [str(e["litellm_params"]["model"]) for e in gateway.deployments_of(body["model"])]
    if tokens and not all(litellm_api.text_completion_model(m) for m in models):
        raise UnsupportedError(f"model {body['model']} is a chat model: its prompt must be text, not token "
                                      "ids (token ids need a text-completion model such as gpt-3.5-turbo-instruct)")


async def complete_text(gateway: Gateway, body: dict[str, Any],
                        headers: dict[str, str] | None = None) -> tuple[dict[str, Any], Served]:
    _check_prompt(gateway, body)
    response = await _call(gateway.router.atext_completion(**_kwargs(gateway, body, headers)))
    served = gateway.served(getattr(response, "_hidden_params", None), body["model"])
    data = clean_text_completion(response.model_dump(mode="json", warnings=False))
    usage = data.get("usage") or {}
    served.cost_usd = gateway.cost(served, body["model"], int(usage.get("prompt_tokens") or 0),
                                   int(usage.get("completion_tokens") or 0))
    return data, served


async def complete_text_stream(gateway: Gateway, body: dict[str, Any], served: Served,
                               headers: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
    """Yield ``text_completion`` chunks with one id; the usage, when known, comes last on a chunk with no choice."""
    _check_prompt(gateway, body)
    upstream = await _call(gateway.router.atext_completion(**_kwargs(gateway, {**body, "stream": True}, headers)))
    _fill(gateway, served, gateway.served(getattr(upstream, "_hidden_params", None), body["model"]), body["model"])
    first: dict[str, Any] | None = None
    usage = None
    async for raw in _iterate(upstream):
        chunk = clean_text_chunk(raw)
        found = chunk.pop("usage", None)
        usage = found if found and found.get("total_tokens") else usage  # LiteLLM repeats zero usages
        first = first or chunk
        chunk.update({k: first[k] for k in ("id", "created", "model") if k in first})
        if chunk["choices"] and any(c["text"] or c["finish_reason"] for c in chunk["choices"]):
            yield chunk
    if usage is not None and first is not None:
        yield {**{k: first[k] for k in ("id", "object", "created", "model") if k in first}, "choices": [],
               "usage": usage}
