"""HTTP plumbing: request ids, and the one middleware that renders errors and accounts for every answer.

Every response carries ``X-Deja-Request-Id`` and ``X-Request-Id`` (the same id; OpenAI's SDKs read it into
``response._request_id``). The id is unique per request, so each answered request has its own usage row: a
client's well-formed ``X-Request-Id`` is kept as its prefix, ``<client id>.<12 hex>``, so a reused one (by the
same client or another tenant) still names one row per request and the client's id finds them all.

Every error, ours or a foreign one, leaves as OpenAI's ``{"error": {"message", "type", "param", "code"}}``
(``errors.to_openai_error``); never a stack trace. Each answer gets one access-log line and one
``deja_requests_total`` count, whose status is the pipeline's ``Outcome`` status when the pipeline handled the
request (a stream that failed after its headers went out counts with its in-band error's status), else the
status sent.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from providers import errors as perr
from router.appkeys import METRICS, RECENT_ERRORS, SETTINGS
from router.http import errors as err
from router.pipeline.steps import Outcome

log = logging.getLogger("deja.http")
access_log = logging.getLogger("deja.access")
REQUEST_ID = web.RequestKey("request_id", str)
MODEL_LABEL = web.RequestKey("model_label", str)
OUTCOME = web.RequestKey("outcome", Outcome)  # set by the pipeline when it ends
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET = ("/health/", "/metrics", "/status.json", "/favicon.ico")  # polled endpoints: no access-log line

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` with orjson (several times faster than json on completions)."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def error_response(exc: err.DejaError, request_id: str | None = None) -> web.Response:
    headers = dict(exc.headers)
    if request_id:
        headers["X-Deja-Request-Id"] = request_id
        headers["X-Request-Id"] = request_id
    return json_response(exc.body(), status=exc.status, headers=headers)


def new_request_id(client_id: str) -> str:
    """``<client id>.<12 hex>`` for a well-formed client id (1-128 of ``A-Za-z0-9._:-``), else ``req_<32 hex>``."""
    if _SAFE_ID.fullmatch(client_id):
        return f"{client_id}.{uuid.uuid4().hex[:12]}"
    return f"req_{uuid.uuid4().hex}"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id(request.headers.get("X-Request-Id", ""))
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    route = _route(request)
    metrics = request.app[METRICS]
    status = 499  # the client went away before an answer
    error: err.DejaError | None = None
    if route != "other":
        metrics.inflight.inc()
        metrics.in_progress += 1
    try:
        _check_url(request)
        response = await handler(request)
        status = response.status
    except (web.HTTPSuccessful, web.HTTPRedirection):
        raise
    except Exception as exc:  # every failure becomes OpenAI's error shape
        error = err.to_openai_error(exc)
        if _unexpected(exc):
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
        response = error_response(error, request_id)
        status = error.status
    finally:
        outcome = request.get(OUTCOME)
        if outcome is not None:
            status, error = outcome.status, outcome.error or error
        if route != "other":
            metrics.inflight.dec()
            metrics.in_progress -= 1
            metrics.requests.labels(route=route, model=request.get(MODEL_LABEL, "-"), status=str(status)).inc()
        _remember(request, request_id, status, error)
        _log(request, request_id, route, status, error, outcome, started)
    if not response.prepared:
        response.headers["X-Deja-Request-Id"] = request_id
        response.headers["X-Request-Id"] = request_id
    return response


def _check_url(request: web.Request) -> None:
    """A NUL in the path or the query reaches no handler: no database can store or compare it."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.query.items()):
        raise err.BadRequestError("The URL may not contain a NUL character (%00).", code="invalid_url")


def _unexpected(exc: BaseException) -> bool:
    """A bug, not a refusal: a foreign exception, or the generic 500 the pipeline mapped one to (its cause)."""
    if isinstance(exc, err.DejaError) and exc.code == "internal_error" and exc.__cause__ is not None:
        exc = exc.__cause__
    return not isinstance(exc, err.DejaError | perr.ProviderError | web.HTTPException)


def _remember(request: web.Request, request_id: str, status: int, error: err.DejaError | None) -> None:
    """Failed requests for the status page: server-side failures and upstream ones."""
    recent = request.app.get(RECENT_ERRORS)
    if recent is not None and error is not None and (status >= 500 or error.code and "upstream" in error.code):
        recent.add(request_id, status, error.message)


def _log(request: web.Request, request_id: str, route: str, status: int, error: err.DejaError | None,
         outcome: Outcome | None, started: float) -> None:
    if request.path.startswith(_QUIET) or request.path == "/":
        return
    from router.pipeline.accounting import access_fields

    event: dict[str, Any] = {"request_id": request_id, "method": request.method, "path": request.path,
                             "route": route, "status": status,
                             "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if outcome is not None:
        event.update(access_fields(outcome, request.app[SETTINGS].deja.log_prompts))
    elif error is not None:
        event["error_type"] = error.code or error.type
    if error is not None and isinstance(error.__cause__, perr.ProviderError):
        event["upstream_message"] = error.__cause__.message  # the provider's full words: the log only
    access_log.info("request", extra={"event": event})


def _route(request: web.Request) -> str:
    path = request.path
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path in ("/v1/responses", "/responses"):
        return "responses"
    if path in ("/v1/completions", "/completions"):
        return "completions"
    return "other"
