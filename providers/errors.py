"""Provider errors: what went wrong upstream, without HTTP.

- ``ProviderError``               any upstream failure (the router answers 502)
  - ``ProviderBadRequestError``   the upstream refused the request as invalid (400)
  - ``ProviderAuthError``         the upstream refused deja's credentials (502: the client's key is not at fault)
  - ``UnknownModelError``         no model group of that name (404)
  - ``ProviderRateLimitError``    the upstream rate-limited us, with ``retry_after`` when known (429)
  - ``ProviderTimeoutError``      the upstream did not answer in time (504)

LiteLLM's exceptions are translated once, in ``translate``.
"""

from __future__ import annotations

import math


class ProviderError(Exception):
    def __init__(self, message: str, *, deployment: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.deployment = deployment


class ProviderBadRequestError(ProviderError):
    pass


class ProviderAuthError(ProviderError):
    pass


class UnknownModelError(ProviderError):
    pass


class ProviderRateLimitError(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None = None, deployment: str | None = None) -> None:
        super().__init__(message, deployment=deployment)
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    pass


def _retry_after(exc: BaseException) -> float | None:
    sources = (getattr(exc, "litellm_response_headers", None), getattr(getattr(exc, "response", None), "headers", None))
    for headers in sources:
        getter = getattr(headers, "get", None)
        value = getter("retry-after") if callable(getter) else None
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = str(text).replace("litellm.", "")
    return text if len(text) <= 500 else text[:497] + "..."


def translate(exc: BaseException) -> ProviderError:
    """Map a LiteLLM (or httpx/openai) exception to a ``ProviderError``, naming the deployment that failed."""
    if isinstance(exc, ProviderError):
        return exc
    error = _translate(exc)
    error.deployment = getattr(exc, "failed_deployment_id", None)
    return error


def _translate(exc: BaseException) -> ProviderError:
    import litellm

    message = _message(exc)
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return ProviderTimeoutError(message)
    if isinstance(exc, litellm.RateLimitError):
        return ProviderRateLimitError(message, retry_after=_retry_after(exc))
    if isinstance(exc, litellm.ContextWindowExceededError | litellm.BadRequestError | litellm.UnprocessableEntityError):
        if "Invalid model name" in message or "no deployments" in message.lower():
            return UnknownModelError(message)
        return ProviderBadRequestError(message)
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return ProviderAuthError(message)
    if isinstance(exc, litellm.NotFoundError):
        return ProviderError(message)
    status = getattr(exc, "status_code", None)
    if status == 429:
        return ProviderRateLimitError(message, retry_after=_retry_after(exc))
    if status in (408, 504):
        return ProviderTimeoutError(message)
    return ProviderError(message)


def retry_after_seconds(value: float | None) -> str | None:
    return None if value is None else str(max(1, math.ceil(value)))
