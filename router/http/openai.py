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
    app[AUTH].check_model(principal, body["model"])
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
    names = [m for m in request.app[GATEWAY].groups if principal.may_use(m)]
    return web.json_response({"object": "list", "data": [_model_card(m) for m in names]})


async def get_model(request: web.Request) -> web.Response:
    principal = await request.app[AUTH].authenticate(request.headers)
    name = request.match_info["model"]
    if not request.app[GATEWAY].has_model(name) or not principal.may_use(name):
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
    upstream = await app[GATEWAY].ping()
    ok = all(checks.values()) and any(upstream.values())
    checks.update({f"upstream:{k}": v for k, v in upstream.items()})
    models: dict[str, bool] = {}
    for entry in app[GATEWAY].model_list:
        group = entry["model_name"]
        models[group] = models.get(group, False) or upstream.get(entry["model_info"]["id"], False)
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks, "models": models},
                             status=200 if ok else 503)


async def deployments(request: web.Request) -> web.Response:
    """``GET /health/deployments``: each deployment's model group, provider model, reachability and whether the
    Router is cooling it down, for dashboards. Always 200 (the figures are the answer); no secrets."""
    gateway = request.app[GATEWAY]
    reachable = await gateway.ping()
    cooling = await gateway.cooling_down()
    data = []
    for entry in gateway.model_list:
        deployment = str(entry["model_info"]["id"])
        up = reachable.get(deployment, False)
        data.append({"deployment": deployment, "model_group": entry["model_name"],
                     "model": entry["litellm_params"]["model"], "reachable": up, "cooling_down": deployment in cooling,
                     "healthy": up and deployment not in cooling})
    return web.json_response({"object": "list", "data": data,
                              "healthy": sum(d["healthy"] for d in data), "total": len(data)})

