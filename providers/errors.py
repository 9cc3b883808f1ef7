"""Provider errors: what went wrong upstream, without HTTP. The one table that turns them into the client's
OpenAI error is ``router.http.errors.to_openai_error``; the status a client sees is given in brackets.

- ``ProviderError``               any upstream failure: 5xx, connection refused, a stream cut (502)
  - ``ProviderBadRequestError``   the upstream refused the request as invalid (400)
  - ``ProviderAuthError``         the upstream refused deja's credentials (502: the client's key is not at fault)
  - ``UnknownModelError``         no model group of that name (404)
  - ``UnsupportedError``          the model group cannot do this (embeddings from a chat-only model) (400)
  - ``ProviderRateLimitError``    the upstream rate-limited us, with ``retry_after`` when known (429)
  - ``ProviderTimeoutError``      the upstream did not answer in time (504)

Each carries ``message`` (full text, for the log only: it may hold the provider's own words about credentials),
``reason`` (short and redacted, for the client), ``upstream_status`` and ``provider`` when known, and the
``deployment`` that failed. LiteLLM's exceptions are translated once, in ``translate``.
"""

from __future__ import annotations

import math
import re

_SECRET = re.compile(r"(?i)(bearer\s+|api[_-]?key[=: ]+|sk-)[A-Za-z0-9_\-*]+(?:\.[A-Za-z0-9_\-*]+)*")
_REASON_CHARS = 160


def short_reason(text: str) -> str:
    """The first sentence of an upstream message, secrets redacted, at most 160 characters."""
    line = _SECRET.sub(lambda m: m.group(1) + "***", text.strip().splitlines()[0] if text.strip() else "")
    for stop in (". ", " Received Model Group", " Available Model Group", " LiteLLM Retried"):
        head, sep, _ = line.partition(stop)
        if sep:
            line = head + ("." if stop == ". " else "")
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."


class ProviderError(Exception):
    def __init__(self, message: str, *, deployment: str | None = None, upstream_status: int | None = None,
                 provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.deployment = deployment
        self.upstream_status = upstream_status
        self.provider = provider

    @property
    def reason(self) -> str:
        return short_reason(self.message) or type(self).__name__


class ProviderBadRequestError(ProviderError):
    pass


class ProviderAuthError(ProviderError):
    pass


class UnknownModelError(ProviderError):
    pass


class UnsupportedError(ProviderError):
    pass


class ProviderRateLimitError(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
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
    status = getattr(exc, "status_code", None)
    error.upstream_status = status if isinstance(status, int) else None
    provider = getattr(exc, "llm_provider", None)
    error.provider = provider if isinstance(provider, str) and provider else None
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
        if isinstance(exc, litellm.UnsupportedParamsError) or "does not support" in message:
            return UnsupportedError(message)
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
