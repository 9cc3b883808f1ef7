"""HTTP plumbing: request ids, the error middleware, request parsing and validation.

Every response carries ``X-Deja-Request-Id`` (a client's ``X-Request-Id`` is kept). Every error, ours or a
foreign one, leaves as OpenAI's ``{"error": {"message", "type", "param", "code"}}``; never a stack trace.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from providers import errors as perr
from router.appkeys import METRICS, RECENT_ERRORS
from router.http import errors as err

log = logging.getLogger("deja.http")
REQUEST_ID = web.RequestKey("request_id", str)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def provider_error(exc: perr.ProviderError) -> err.DejaError:
    """Translate a provider failure into the HTTP error the client sees."""
    if isinstance(exc, perr.UnknownModelError):
        return err.NotFoundError(exc.message, param="model")
    if isinstance(exc, perr.ProviderRateLimitError):
        return err.RateLimitError(f"Upstream rate limit: {exc.message}", retry_after=exc.retry_after or 1.0,
                                  code="upstream_rate_limited")
    if isinstance(exc, perr.ProviderTimeoutError):
        return err.UpstreamTimeoutError(f"Upstream timed out: {exc.message}")
    if isinstance(exc, perr.ProviderBadRequestError):
        return err.BadRequestError(exc.message, code="upstream_bad_request")
    return err.UpstreamError(f"Upstream failure: {exc.message}")


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` with orjson (several times faster than json on completions)."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def error_response(exc: err.DejaError, request_id: str | None = None) -> web.Response:
    headers = dict(exc.headers)
    if request_id:
        headers["X-Deja-Request-Id"] = request_id
    return json_response(exc.body(), status=exc.status, headers=headers)


def _as_deja_error(exc: BaseException) -> err.DejaError:
    if isinstance(exc, err.DejaError):
        return exc
    if isinstance(exc, perr.ProviderError):
        return provider_error(exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return err.PayloadTooLargeError("Request body is larger than the configured limit.")
    if isinstance(exc, web.HTTPNotFound):
        return err.NotFoundError("Unknown endpoint.", code="not_found")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        error = err.BadRequestError("Method not allowed for this endpoint.", code="method_not_allowed")
        error.status = 405
        return error
    if isinstance(exc, web.HTTPException):
        generic = err.DejaError(exc.reason or "HTTP error", code=None)
        generic.status = exc.status
        generic.type = "invalid_request_error" if exc.status < 500 else "server_error"
        return generic
    return err.DejaError("Internal error in deja; see the server log for this request id.", code="internal_error")


MODEL_LABEL = web.RequestKey("model_label", str)
STATUS_LABEL = web.RequestKey("status_label", str)  # set when a stream ends with an in-band error


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client_id = request.headers.get("X-Request-Id", "")
    request_id = client_id if _SAFE_ID.match(client_id) else f"req_{uuid.uuid4().hex}"
    request[REQUEST_ID] = request_id
    route = _route(request)
    metrics = request.app[METRICS]
    status = 499  # the client went away before an answer
    if route != "other":
        metrics.inflight.inc()
    try:
        response = await handler(request)
        status = response.status
    except (web.HTTPSuccessful, web.HTTPRedirection):
        raise
    except Exception as exc:  # every failure becomes OpenAI's error shape
        error = _as_deja_error(exc)
        if error.status >= 500 and not isinstance(exc, err.DejaError | perr.ProviderError):
            log.exception("unhandled error", extra={"request_id": request_id})
        if error.status >= 500 or isinstance(exc, perr.ProviderError):
            recent = request.app.get(RECENT_ERRORS)
            if recent is not None:
                recent.add(request_id, error.status, error.message)
        response = error_response(error, request_id)
        status = error.status
    finally:
        if route != "other":
            metrics.inflight.dec()
            label = request.get(STATUS_LABEL) or str(status)
            metrics.requests.labels(route=route, model=request.get(MODEL_LABEL, "-"), status=label).inc()
    if not response.prepared:
        response.headers["X-Deja-Request-Id"] = request_id
    return response


def _route(request: web.Request) -> str:
    path = request.path
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/embeddings"):
        return "embeddings"
    return "other"
