"""deja's HTTP-facing errors, each rendered in OpenAI's shape by one middleware.

Hierarchy (status, OpenAI ``type``, default ``code``):

- ``DejaError``                      500 server_error
  - ``BadRequestError``              400 invalid_request_error
  - ``AuthenticationError``          401 invalid_request_error  invalid_api_key
  - ``PermissionDeniedError``        403 permission_error       model_not_allowed
  - ``NotFoundError``                404 invalid_request_error  model_not_found
  - ``PayloadTooLargeError``         413 invalid_request_error  request_too_large
  - ``RateLimitError``               429 rate_limit_error       rate_limit_exceeded  (carries ``Retry-After``)
  - ``BudgetExceededError``          429 insufficient_quota     insufficient_quota
  - ``UpstreamError``                502 upstream_error
  - ``ServiceUnavailableError``      503 service_unavailable
  - ``UpstreamTimeoutError``         504 timeout
  - ``ClientClosedError``            499 (recorded only: the client is gone)

Foreign exceptions (redis, asyncpg) are translated where they are caught, with ``raise X(...) from exc``; provider
failures arrive as ``providers.errors.ProviderError`` and are mapped by ``to_openai_error``, the one table that every
answer, usage row, metric label and log line takes its status from.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from providers import errors as perr


class DejaError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequestError(DejaError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(DejaError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(DejaError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(DejaError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLargeError(DejaError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(DejaError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))


class BudgetExceededError(RateLimitError):
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(DejaError):
    status = 502
    type = "upstream_error"


class ServiceUnavailableError(DejaError):
    status = 503
    type = "service_unavailable"


class UpstreamTimeoutError(DejaError):
    status = 504
    type = "timeout"


class ClientClosedError(DejaError):
    """The client went away before the answer was complete (nginx's 499; never sent, only recorded)."""

    status = 499
    type = "client_closed_request"
    code = "client_disconnected"


def _upstream_says(exc: perr.ProviderError) -> str:
    """What a client is told of an upstream failure: provider, status and a short redacted reason. The full
    upstream text (which may quote credentials or the Router's fallbacks) goes to the log only."""
    who = exc.provider or "the provider"
    status = f" with {exc.upstream_status}" if exc.upstream_status else ""
    return f"Upstream {who} answered{status}: {exc.reason}"


def _from_provider(exc: perr.ProviderError) -> DejaError:
    if isinstance(exc, perr.UnknownModelError):
        return NotFoundError(exc.message, param="model")
    if isinstance(exc, perr.UnsupportedError):
        return BadRequestError(exc.message, param="model", code="unsupported_by_model")
    if isinstance(exc, perr.ProviderRateLimitError):
        return RateLimitError(_upstream_says(exc), retry_after=exc.retry_after or 1.0, code="upstream_rate_limited")
    if isinstance(exc, perr.ProviderTimeoutError):
        return UpstreamTimeoutError(_upstream_says(exc), code="upstream_timeout")
    if isinstance(exc, perr.ProviderBadRequestError):
        return BadRequestError(_upstream_says(exc), code="upstream_bad_request")
    if isinstance(exc, perr.ProviderAuthError):
        return UpstreamError(_upstream_says(exc), code="upstream_auth_failed")
    return UpstreamError(_upstream_says(exc), code="upstream_error")


def _from_http(exc: web.HTTPException) -> DejaError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLargeError("Request body is larger than the configured limit.")
    if isinstance(exc, web.HTTPNotFound):
        return NotFoundError("Unknown endpoint.", code="not_found")
    error = DejaError(exc.reason or "HTTP error", code=None)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        error = BadRequestError("Method not allowed for this endpoint.", code="method_not_allowed")
    error.status = exc.status
    error.type = "invalid_request_error" if exc.status < 500 else "server_error"
    return error


def to_openai_error(exc: BaseException) -> DejaError:
    """The one error map: any exception → the ``DejaError`` whose status, type and message the client sees, the
    usage row and the metric record, and the access log prints."""
    if isinstance(exc, DejaError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return ClientClosedError("The client closed the connection.")
    if isinstance(exc, perr.ProviderError):
        return _from_provider(exc)
    if isinstance(exc, web.HTTPException):
        return _from_http(exc)
    return DejaError("Internal error in deja; see the server log for this request id.", code="internal_error")
