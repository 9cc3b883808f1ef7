"""``/v1/embeddings``, ``/v1/models``, ``/v1/models/{id}`` and the health checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from providers.errors import ProviderError
from providers.interface import DeploymentInventory
from router.appkeys import AUTH, CONTEXT, PROVIDER, REDIS_PING, STORAGE
from router.http import errors as err
from router.http.middleware import json_response
from router.http.parsing import EmbeddingRequest, read_json, validate, without_nulls

_CREATED = int(time.time())
# Fields of OpenAI's other endpoints, meaningless for an embedding: not sent on (LiteLLM's Router trips on some of
# them, e.g. a string ``tools``, and a ``stream`` flag would make a stream of a JSON answer)
_NOT_EMBEDDINGS = frozenset({"messages", "prompt", "tools", "tool_choice", "functions", "function_call", "stream",
                             "stream_options", "n", "response_format", "logprobs", "top_logprobs", "logit_bias",
                             "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
                             "presence_penalty", "frequency_penalty", "parallel_tool_calls", "modalities", "audio"})


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: accept → admit → the provider → account, as the chat flow does."""
    from router.http.attribution import without_tags
    from router.pipeline.accounting import accounted, admit, spend_headers
    from router.pipeline.chat import accept

    ctx = request.app[CONTEXT]
    body = without_nulls(await read_json(request, ctx.settings.max_body_bytes))
    validate(EmbeddingRequest, body)
    call = await accept(ctx, request, body, route="embeddings", request_body=None)
    if not ctx.provider.supports_embeddings(call.model):
        raise err.BadRequestError(f"model {call.model} does not support embeddings", param="model",
                                  code="model_not_supported")
    body = {k: v for k, v in without_tags(body).items() if k not in _NOT_EMBEDDINGS}
    with accounted(ctx, request, call) as trail:
        meter = trail.meter
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        trail.admission = admission = await admit(ctx, call, sum(len(str(item)) // 3 + 1 for item in inputs))
        meter.upstream_begins()
        try:
            data, meter.served = await ctx.provider.embed(body, call.upstream_headers)
        except ProviderError as exc:
            meter.upstream_ends()
            meter.served.deployment = exc.deployment or ctx.provider.first_deployment(call.model)
            raise
        meter.upstream_ends()
        meter.prompt_tokens = int(data["usage"]["prompt_tokens"])
        meter.cost_usd = meter.served.cost_usd
        return json_response(data, headers={"X-Deja-Request-Id": call.request_id, "X-Request-Id": call.request_id,
                                            **admission.headers, **await spend_headers(ctx, call, meter.cost_usd)})


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "deja"}


async def list_models(request: web.Request) -> web.Response:
    principal = await request.app[AUTH].authenticate(request.headers)
    provider = request.app[PROVIDER]
    names = [m for m in provider.listed_models() if principal.may_use(m) or principal.may_use(provider.resolve(m))]
    return web.json_response({"object": "list", "data": [_model_card(m) for m in names]})


async def get_model(request: web.Request) -> web.Response:
    principal = await request.app[AUTH].authenticate(request.headers)
    name = request.match_info["model"]
    provider = request.app[PROVIDER]
    if not provider.has_model(name) or not (principal.may_use(name) or principal.may_use(provider.resolve(name))):
        raise err.NotFoundError(f"The model `{name}` does not exist or you do not have access to it.",
                                param="model")
    return web.json_response(_model_card(name))


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 while this replica can answer: the database and Redis (if configured) answer, and at least one
    deployment is reachable. One deployment down must not take every replica out of the load balancer while
    other models still work; the body says which deployments and model groups are up."""
    app = request.app
    checks: dict[str, bool] = {}
    try:
        checks["database"] = await asyncio.wait_for(app[STORAGE].ping(), 2)
    except Exception:
        checks["database"] = False
    redis_ping = app.get(REDIS_PING)
    if redis_ping is not None:
        checks["redis"] = await redis_ping()
    upstream = await app[PROVIDER].ping()
    ok = all(checks.values()) and any(upstream.values())
    checks.update({f"upstream:{k}": v for k, v in upstream.items()})
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    provider = app[PROVIDER]
    if isinstance(provider, DeploymentInventory):
        models: dict[str, bool] = {}
        for d in provider.deployments():
            models[d.group] = models.get(d.group, False) or upstream.get(d.id, False)
        body["models"] = models
    return web.json_response(body, status=200 if ok else 503)


async def deployments(request: web.Request) -> web.Response:
    """``GET /health/deployments``: each deployment's model group, provider model, reachability and whether the
    Router is cooling it down, for dashboards. Always 200 (the figures are the answer); no secrets."""
    provider = request.app[PROVIDER]
    reachable = await provider.ping()
    data: list[dict[str, Any]] = []
    if isinstance(provider, DeploymentInventory):
        cooling = await provider.cooling_down()
        for d in provider.deployments():
            up = reachable.get(d.id, False)
            data.append({"deployment": d.id, "model_group": d.group, "model": d.model, "reachable": up,
                         "cooling_down": d.id in cooling, "healthy": up and d.id not in cooling})
    else:
        data = [{"deployment": k, "reachable": v, "healthy": v} for k, v in reachable.items()]
    return web.json_response({"object": "list", "data": data,
                              "healthy": sum(1 for d in data if d["healthy"]), "total": len(data)})

