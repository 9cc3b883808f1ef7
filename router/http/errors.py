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

Foreign exceptions (LiteLLM, redis, asyncpg) are translated where they are caught, with ``raise X(...) from exc``.
"""

from __future__ import annotations

import math
from typing import Any


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
