"""HTTP plumbing: request ids, the error middleware, request parsing and validation.

Every response carries ``X-Deja-Request-Id`` (a client's ``X-Request-Id`` is kept). Every error, ours or a
foreign one, leaves as OpenAI's ``{"error": {"message", "type", "param", "code"}}``; never a stack trace.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers import errors as perr
from router import errors as err
from router.appkeys import METRICS, RECENT_ERRORS

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


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise err.PayloadTooLargeError(f"Request body of {request.content_length} bytes is over the "
                                       f"limit of {max_bytes} bytes.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise err.PayloadTooLargeError(f"Request body is over the limit of {max_bytes} bytes.") from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _strict_loads(raw)
    if not isinstance(body, dict):
        raise err.BadRequestError("Request body must be a JSON object.", code="invalid_json")
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _strict_loads(raw: bytes) -> Any:
    """What orjson refused, read by json to word the error (NaN and Infinity are refused, as JSON does)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise err.BadRequestError(f"Request body is not valid JSON: {exc}", code="invalid_json") from exc


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """What deja checks of a chat request; every other field passes through unchanged."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    user: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]


def validate(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise err.BadRequestError(f"Invalid request: {param}: {first['msg']}", param=param,
                                  code="invalid_request") from exc
