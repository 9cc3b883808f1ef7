"""``/v1/embeddings``, ``/v1/models``, ``/v1/models/{id}`` and the health checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from router.appkeys import AUTH, GATEWAY, REDIS_PING, SETTINGS, STORAGE
from router.http import errors as err
from router.http.middleware import MODEL_LABEL, REQUEST_ID
from router.http.parsing import EmbeddingRequest, read_json, validate
from router.pipeline.accounting import Exchange, admit, finish

_CREATED = int(time.time())


async def embeddings(request: web.Request) -> web.Response:
    app = request.app
    body = await read_json(request, app[SETTINGS].deja.max_body_bytes)
    validate(EmbeddingRequest, body)
    principal = await app[AUTH].authenticate(request.headers)
    gateway = app[GATEWAY]
    gateway.check_model(body["model"])
    request[MODEL_LABEL] = body["model"]
    app[AUTH].check_model(principal, body["model"], gateway.resolve(body["model"]))
    if not gateway.supports_embeddings(body["model"]):
        raise err.BadRequestError(f"model {body['model']} does not support embeddings", param="model",
                                  code="model_not_supported")
    ex = Exchange(request_id=request[REQUEST_ID], route="embeddings", principal=principal, model=body["model"],
                  end_user=body.get("user") if isinstance(body.get("user"), str) else None)
    try:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        headers = await admit(app, ex, sum(len(str(item)) // 3 + 1 for item in inputs))
        started = time.perf_counter()
        data, served = await gateway.embed(body)
        ex.upstream_seconds = time.perf_counter() - started
        ex.prompt_tokens_client = ex.prompt_tokens_sent = data["usage"]["prompt_tokens"]
        ex.cost_usd, ex.deployment, ex.provider = served.cost_usd, served.deployment, served.provider
        return web.json_response(data, headers={"X-Deja-Request-Id": ex.request_id, **headers})
    except asyncio.CancelledError:
        ex.status, ex.error_type = 499, "client_disconnected"
        raise
    except Exception as exc:
        ex.status, ex.error_type = getattr(exc, "status", 502), type(exc).__name__
        raise
    finally:
        finish(app, ex)


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "deja"}


async def list_models(request: web.Request) -> web.Response:
    principal = await request.app[AUTH].authenticate(request.headers)
    gateway = request.app[GATEWAY]
    names = [m for m in gateway.names.listed() if principal.may_use(m) or principal.may_use(gateway.resolve(m))]
    return web.json_response({"object": "list", "data": [_model_card(m) for m in names]})


async def get_model(request: web.Request) -> web.Response:
    principal = await request.app[AUTH].authenticate(request.headers)
    name = request.match_info["model"]
    gateway = request.app[GATEWAY]
    if not gateway.has_model(name) or not (principal.may_use(name) or principal.may_use(gateway.resolve(name))):
        raise err.NotFoundError(f"The model `{name}` does not exist or you do not have access to it.",
                                param="model")
    return web.json_response(_model_card(name))


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 only when every configured backend answers: database, Redis (cache/limits), upstream deployments."""
    app = request.app
    checks: dict[str, bool] = {}
    try:
        checks["database"] = await asyncio.wait_for(app[STORAGE].ping(), 2)
    except Exception:
        checks["database"] = False
    redis_ping = app.get(REDIS_PING)
    if redis_ping is not None:
        checks["redis"] = await redis_ping()
    upstream = await app[GATEWAY].ping()
    checks.update({f"upstream:{k}": v for k, v in upstream.items()})
    ok = all(checks.values())
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)

