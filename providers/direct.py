"""A direct path to OpenAI-compatible deployments, inside LiteLLM's Router.

``litellm.acompletion`` costs about 2 ms of CPU per call on this machine (a thread hop for its synchronous parameter
mapping, the openai SDK's request building, logging objects, its own cost calculation), which is more than
everything else deja does for a request. For a deployment that speaks OpenAI's own API (``openai/...``) none of that
work changes what is sent: the client's body is already OpenAI's. ``DejaRouter`` keeps everything that is the
Router's — deployment choice, cooldowns, retries, fallbacks, timeouts — and replaces only the last step, the call
itself (chat completions and embeddings), by one aiohttp request on a pooled connection. Failures become LiteLLM's
exception types and are reported to the Router's cooldown bookkeeping exactly as LiteLLM's failure callback reports
them, so retries, fallbacks and cooldowns behave the same.

A model group takes the direct path only when every deployment in it is ``openai/...`` (by prefix or by LiteLLM's
provider inference) with no LiteLLM-only parameter, the routing strategy is ``simple-shuffle`` (the others learn
from LiteLLM's success callbacks) and LiteLLM is not asked to rewrite requests (``drop_params`` /
``modify_params``). Everything else goes through LiteLLM unchanged. ``deja.direct_openai: false`` turns it off.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncGenerator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import litellm
import orjson
import yarl

from providers.litellm_api import RouterHooks, provider_of, reasoning_model

# litellm_params a direct call understands; any other key (a LiteLLM-only feature) keeps the group on LiteLLM
_DIRECT_PARAMS = {"model", "api_base", "base_url", "api_key", "organization", "timeout", "stream_timeout",
                  "request_timeout", "extra_headers", "max_retries", "num_retries", "cooldown_time", "weight",
                  "order", "rpm", "tpm"}  # order, weight, rpm, tpm: the Router's deployment choice, kept
_PROVIDER = "openai"
_DEFAULT_BASE = "https://api.openai.com/v1"
_DRAIN_SECONDS = 5.0


def _openai_model(litellm_model: str) -> str | None:
    """The model name to send if ``litellm_model`` is served by OpenAI's API, else None."""
    if litellm_model.startswith("openai/"):
        return litellm_model.removeprefix("openai/")
    if "/" in litellm_model:
        return None
    return litellm_model if provider_of(litellm_model) == _PROVIDER else None


def direct_capable(deployment: dict[str, Any]) -> bool:
    params = deployment.get("litellm_params") or {}
    if {k for k, v in params.items() if v not in (None, False)} - _DIRECT_PARAMS:  # the Router adds False flags
        return False
    return _openai_model(str(params.get("model", ""))) is not None


class DirectResult:
    """A non-streaming answer: OpenAI's JSON as a dict, with the Router's ``_hidden_params``."""

    def __init__(self, data: dict[str, Any], hidden: dict[str, Any]) -> None:
        self.data = data
        self._hidden_params = hidden

    def model_dump(self) -> dict[str, Any]:
        return self.data


class DirectStream:
    """A streaming answer: yields each chunk as a dict; ``aclose`` drops the upstream connection.

    ``first`` holds the chunks read before the call returned (up to the first one that carries anything), so that
    a stream failing before its first token fails inside the Router's retries and fallbacks. A failure after that
    is reported through ``on_error`` (the Router's failure bookkeeping) and raised to the reader."""

    def __init__(self, events: AsyncGenerator[dict[str, Any], None], first: list[dict[str, Any]],
                 hidden: dict[str, Any], on_error: Callable[[Exception], None]) -> None:
        self._events = events
        self._first = first
        self._hidden_params = hidden
        self._on_error = on_error

    def __aiter__(self) -> DirectStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._first:
            return self._first.pop(0)
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self._on_error(exc)
            raise

    async def aclose(self) -> None:
        await self._events.aclose()


def _carries_something(chunk: dict[str, Any]) -> bool:
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or delta.get("content") or delta.get("tool_calls") or delta.get("refusal") \
                or delta.get("function_call"):
            return True
    return False


async def _events(response: aiohttp.ClientResponse, model: str) -> AsyncGenerator[dict[str, Any], None]:
    """The ``data:`` events of an SSE response as dicts, until ``[DONE]``; the connection goes back to the pool
    after a complete stream and is closed after anything else (a cut, an error, the reader going away)."""
    complete = False
    try:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                complete = True
                break
            chunk = orjson.loads(data)
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise litellm.APIError(status_code=500, message=str(error.get("message")), llm_provider=_PROVIDER,
                                       model=model)
            yield chunk
        if not complete:
            raise litellm.APIConnectionError(message="the upstream closed the stream before [DONE]",
                                             llm_provider=_PROVIDER, model=model)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise litellm.APIConnectionError(message=f"stream interrupted: {exc or type(exc).__name__}",
                                         llm_provider=_PROVIDER, model=model) from exc
    except ValueError as exc:
        raise litellm.APIError(status_code=502, message="the upstream sent an event that is not JSON",
                               llm_provider=_PROVIDER, model=model) from exc
    finally:
        if complete:
            try:  # what follows [DONE] is the end of the body: read it so the connection can be reused
                await asyncio.wait_for(response.read(), _DRAIN_SECONDS)
                response.release()
            except (TimeoutError, aiohttp.ClientError):
                response.close()
        else:
            response.close()


def _error(status: int, body: bytes, raw_headers: Any, model: str) -> Exception:
    """LiteLLM's exception for an upstream error status (the Router's retry and cooldown rules read these)."""
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}  # LiteLLM reads "retry-after"
    try:
        detail = orjson.loads(body).get("error") or {}
    except Exception:
        detail = {}
    if not isinstance(detail, dict):
        detail = {"message": str(detail)}
    message = str(detail.get("message") or body[:500].decode("utf-8", "replace") or f"HTTP {status}")
    code = str(detail.get("code") or "")
    response = httpx.Response(status, headers=headers, content=body,
                              request=httpx.Request("POST", "http://upstream/"))
    kw: dict[str, Any] = {"message": message, "llm_provider": _PROVIDER, "model": model}
    exc: Exception
    if status == 400:
        if code == "context_length_exceeded" or "maximum context length" in message:
            exc = litellm.ContextWindowExceededError(**kw, response=response)
        elif code == "content_filter" or code == "content_policy_violation":
            exc = litellm.ContentPolicyViolationError(**kw, response=response)
        else:
            exc = litellm.BadRequestError(**kw, response=response)
    elif status == 401:
        exc = litellm.AuthenticationError(**kw, response=response)
    elif status == 403:
        exc = litellm.PermissionDeniedError(**kw, response=response)
    elif status == 404:
        exc = litellm.NotFoundError(**kw, response=response)
    elif status == 408:
        exc = litellm.Timeout(**kw, headers=headers, exception_status_code=408)
    elif status == 422:
        exc = litellm.UnprocessableEntityError(**kw, response=response)
    elif status == 429:
        exc = litellm.RateLimitError(**kw, response=response, headers=headers)
    elif status == 502:
        exc = litellm.BadGatewayError(**kw, response=response)
    elif status == 503:
        exc = litellm.ServiceUnavailableError(**kw, response=response)
    elif status >= 500:
        exc = litellm.InternalServerError(**kw, response=response)
        exc.status_code = status
    else:
        exc = litellm.APIError(status_code=status, **kw)
    setattr(exc, "litellm_response_headers", headers)  # noqa: B010 - read by the Router's cooldown and by translate
    return exc


class DejaRouter(RouterHooks):
    """LiteLLM's Router with the direct path for OpenAI-compatible model groups (see the module docstring)."""

    def __init__(self, *args: Any, direct: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        strategy = getattr(self, "routing_strategy", "simple-shuffle")
        self.direct_enabled = (direct and strategy == "simple-shuffle"
                               and not kwargs.get("enable_pre_call_checks")
                               and not getattr(litellm, "drop_params", False)
                               and not getattr(litellm, "modify_params", False))
        self._direct_groups: dict[str, bool] = {}
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, tuple[str | None, aiohttp.BasicAuth | None]] = {}

    def is_direct(self, group: str) -> bool:
        if not self.direct_enabled:
            return False
        known = self._direct_groups.get(group)
        if known is None:
            deployments = [d for d in self.model_list if d.get("model_name") == group]
            known = bool(deployments) and all(direct_capable(d) for d in deployments)
            self._direct_groups[group] = known
        return known

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300, ssl=_ssl_setting())
            # no cookie jar: one client's cookies are not another's. Proxies: see _proxy (trust_env=True would
            # re-read the environment on every request, ~0.3 ms of CPU each)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _proxy(self, url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
        """HTTP(S)_PROXY / NO_PROXY for an upstream, as LiteLLM's httpx client honours them; read once per base."""
        found = self._proxies.get(url)
        if found is None:
            try:
                proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(url))
                found = (str(proxy), auth)
            except LookupError:
                found = (None, None)
            self._proxies[url] = found
        return found

    async def aclose_direct(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def route_completion(self, model: str, messages: list[dict[str, str]], kwargs: dict[str, Any]) -> Any:
        body = kwargs.pop("deja_body", None)
        if body is None or not self.is_direct(model):
            return await super().route_completion(model, messages, kwargs)
        return await self._direct("/chat/completions", model, body, kwargs, messages=messages)

    async def route_embedding(self, input: str | list[Any], model: str, kwargs: dict[str, Any]) -> Any:
        body = kwargs.pop("deja_body", None)
        if body is None or not self.is_direct(model):
            return await super().route_embedding(input, model, kwargs)
        return await self._direct("/embeddings", model, body, kwargs, input=input)

    def with_deployment(self, deployment: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """LiteLLM's path: the request's own headers (``deja_headers``: trace context, request id) join the
        deployment's ``extra_headers`` instead of replacing them."""
        extra = kwargs.pop("deja_headers", None)
        if extra:
            configured = deployment.get("litellm_params", {}).get("extra_headers") or {}
            kwargs["extra_headers"] = {**configured, **extra}

    async def _direct(self, path: str, model: str, body: dict[str, Any], kwargs: dict[str, Any],
                      **choice: Any) -> Any:
        """Pick a deployment as the Router does, call it inside the deployment's concurrency limit, and keep the
        Router's failure bookkeeping and content-policy fallback."""
        deployment = await self.pick_deployment(model, kwargs, **choice)
        started = time.time()
        try:
            async with self.concurrency_limit(deployment, kwargs):
                await self.pre_call_checks(deployment)
                result = await self._call(deployment, path, body, kwargs, started)
            if isinstance(result, DirectResult) and path == "/chat/completions":
                finish = [SimpleNamespace(finish_reason=c.get("finish_reason")) for c in result.data["choices"]]
                shim: Any = SimpleNamespace(choices=finish)  # the Router reads choices[0].finish_reason only
                if self.blocked_by_content_policy(model, shim, kwargs):
                    raise litellm.ContentPolicyViolationError(message="Response output was blocked.", model=model,
                                                              llm_provider="")
        except Exception as exc:
            self._failed(deployment, exc, kwargs, started)
            raise
        self.record_success(deployment)
        return result

    async def _call(self, deployment: dict[str, Any], path: str, body: dict[str, Any], kwargs: dict[str, Any],
                    started: float) -> Any:
        params = deployment["litellm_params"]
        upstream_model = _openai_model(str(params["model"])) or str(params["model"])
        base = str(params.get("api_base") or params.get("base_url") or os.environ.get("OPENAI_BASE_URL")
                   or os.environ.get("OPENAI_API_BASE") or _DEFAULT_BASE).rstrip("/")
        headers = {"Content-Type": "application/json"}
        api_key = params.get("api_key") or os.environ.get("OPENAI_API_KEY")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if params.get("organization"):
            headers["OpenAI-Organization"] = str(params["organization"])
        headers.update({str(k): str(v) for k, v in (params.get("extra_headers") or {}).items()})
        headers.update(kwargs.pop("deja_headers", None) or {})  # the request's trace context and request id
        stream = path == "/chat/completions" and bool(body.get("stream"))  # embeddings never stream
        timeout_s = self.timeout_for({**kwargs, "stream": stream}, params) or 600.0
        timeout = aiohttp.ClientTimeout(total=None if stream else timeout_s, sock_connect=timeout_s,
                                        sock_read=timeout_s)
        hidden = {"model_id": deployment["model_info"]["id"], "custom_llm_provider": _PROVIDER,
                  "api_base": base, "litellm_model_name": params["model"], "additional_headers": {}}
        payload = orjson.dumps(_upstream_body(body, upstream_model))
        proxy, proxy_auth = self._proxy(base)
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._http().post(base + path, data=payload, headers=headers, timeout=timeout,
                                               proxy=proxy, proxy_auth=proxy_auth)
            if response.status != 200:
                raw = await response.read()
                raise _error(response.status, raw, response.headers, upstream_model)
            if stream:
                return await self._open_stream(response, hidden, upstream_model, deployment, kwargs, started)
            raw = await response.read()
        except BaseException as exc:
            if response is not None:
                response.close()
            if isinstance(exc, TimeoutError):
                raise litellm.Timeout(message=f"no answer within {timeout_s:g} s", model=upstream_model,
                                      llm_provider=_PROVIDER) from exc
            if isinstance(exc, aiohttp.ClientError):
                raise litellm.APIConnectionError(message=str(exc) or type(exc).__name__, llm_provider=_PROVIDER,
                                                 model=upstream_model) from exc
            raise
        response.release()
        try:
            data = orjson.loads(raw)
        except ValueError as exc:
            raise litellm.APIError(status_code=502, message="the upstream answered with invalid JSON",
                                   llm_provider=_PROVIDER, model=upstream_model) from exc
        shape = "data" if path == "/embeddings" else "choices"
        if not isinstance(data, dict) or not isinstance(data.get(shape), list):
            raise litellm.APIError(status_code=502, message=f"the upstream's answer has no `{shape}` list",
                                   llm_provider=_PROVIDER, model=upstream_model)
        return DirectResult(data, hidden)

    async def _open_stream(self, response: aiohttp.ClientResponse, hidden: dict[str, Any], model: str,
                           deployment: dict[str, Any], kwargs: dict[str, Any], started: float) -> DirectStream:
        """Read up to the first chunk that carries anything: a stream that fails before it fails here, where the
        Router still retries and falls back (as LiteLLM's mid-stream fallback does before the first token)."""
        events = _events(response, model)
        first: list[dict[str, Any]] = []
        try:
            async for chunk in events:
                first.append(chunk)
                if _carries_something(chunk):
                    break
        except litellm.APIConnectionError as exc:  # accepted, then cut: a server failure (LiteLLM says 503 too)
            await events.aclose()
            # (LiteLLM never cools a deployment down for a message naming an APIConnectionError: keep it out)
            raise litellm.ServiceUnavailableError(message="the upstream's stream ended before its first token",
                                                  llm_provider=_PROVIDER, model=model) from exc
        except BaseException:
            await events.aclose()
            raise
        return DirectStream(events, first, hidden, lambda exc: self._failed(deployment, exc, kwargs, started))

    def _failed(self, deployment: dict[str, Any], exc: Exception, kwargs: dict[str, Any], started: float) -> None:
        if not isinstance(exc, asyncio.CancelledError):
            self.record_failure(deployment, exc, kwargs, started)


def _upstream_body(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The client's body for the deployment's model. OpenAI's reasoning models (o-series, gpt-5) take
    ``max_completion_tokens`` only; LiteLLM renames ``max_tokens`` for them, and so does this."""
    out = {**body, "model": model}
    if "max_tokens" in out and "max_completion_tokens" not in out and reasoning_model(model):
        out["max_completion_tokens"] = out.pop("max_tokens")
    return out


def _ssl_setting() -> ssl.SSLContext | bool:
    """LiteLLM's ``SSL_VERIFY`` / ``litellm.ssl_verify``: false, a CA bundle path, or on (the default)."""
    value: Any = os.environ.get("SSL_VERIFY", getattr(litellm, "ssl_verify", True))
    if value is False or (isinstance(value, str) and value.strip().lower() in {"false", "0", "no"}):
        return False
    if isinstance(value, str) and value.strip().lower() not in {"true", "1", "yes", ""}:
        return ssl.create_default_context(cafile=value)
    return True
