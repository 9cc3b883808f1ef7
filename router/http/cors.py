"""CORS for browsers calling deja directly: allowed origins from ``deja.cors`` (none by default).

``setup(app, settings)`` installs two pieces:

- a middleware answering preflights (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin
  with 204 and the allowed methods and headers; a preflight from any other origin gets a 403 in OpenAI's shape;
- an ``on_response_prepare`` hook adding ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers``
  (deja's own headers, so that browser code can read them) to every answer for an allowed origin, streams
  included: the hook runs before the headers are sent, which a middleware could not do for a stream.

Origins match exactly (scheme, host, port; case-insensitive) or by a ``fnmatch`` pattern such as
``https://*.example.com``; ``*`` allows every origin (and is answered as ``*`` unless credentials are allowed).
Without configured origins nothing is added and ``OPTIONS`` stays a 405, as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase

from aiohttp import web
from aiohttp.typedefs import Middleware

from router.config import CorsSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
EXPOSED = (
    "X-Deja-Request-Id", "x-request-id", "X-Deja-Cache", "X-Deja-Cache-Similarity", "Age",
    "X-Deja-Prompt-Tokens-Original", "X-Deja-Prompt-Tokens-Sent", "x-deja-response-cost",
    "x-litellm-response-cost", "x-deja-key-spend", "x-litellm-key-spend", "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "Retry-After",
)
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")
CORS_SETTINGS = web.AppKey("cors_settings", CorsSettings)


class OriginPolicy:
    def __init__(self, settings: CorsSettings) -> None:
        self.settings = settings
        self._patterns = [o.strip().rstrip("/").lower() for o in settings.allow_origins if o.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._patterns)

    def allows(self, origin: str) -> bool:
        candidate = origin.strip().lower()
        return any(p == "*" or p == candidate or fnmatchcase(candidate, p) for p in self._patterns)

    def allow_origin_value(self, origin: str) -> str:
        if "*" in self._patterns and not self.settings.allow_credentials:
            return "*"
        return origin

    def base_headers(self, origin: str) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": self.allow_origin_value(origin), "Vary": "Origin"}
        if self.settings.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


def preflight_response(policy: OriginPolicy, request: web.Request) -> web.Response:
    origin = request.headers.get("Origin", "")
    if not policy.allows(origin):
        error = {"message": f"Origin {origin!r} is not allowed to call this API.", "type": "permission_error",
                 "param": None, "code": "origin_not_allowed"}
        return web.json_response({"error": error}, status=403)
    headers = policy.base_headers(origin)
    headers["Access-Control-Allow-Methods"] = METHODS
    requested = request.headers.get("Access-Control-Request-Headers", "").strip()
    if requested and _HEADER_LIST.match(requested):
        headers["Access-Control-Allow-Headers"] = requested
    headers["Access-Control-Max-Age"] = str(policy.settings.max_age)
    return web.Response(status=204, headers=headers)


def cors_middleware(policy: OriginPolicy) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (policy.enabled and request.method == "OPTIONS" and "Origin" in request.headers
                and "Access-Control-Request-Method" in request.headers):
            return preflight_response(policy, request)
        return await handler(request)

    return middleware


def response_hook(policy: OriginPolicy) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if not policy.enabled or origin is None or not policy.allows(origin):
            return
        if "Access-Control-Allow-Origin" in response.headers:  # a preflight answer: complete already
            return
        for name, value in policy.base_headers(origin).items():
            if name == "Vary" and "Vary" in response.headers:
                response.headers["Vary"] = f"{response.headers['Vary']}, Origin"
            else:
                response.headers[name] = value
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED)

    return on_prepare


def setup(app: web.Application, settings: CorsSettings) -> None:
    """Install CORS on ``app`` (before it starts): the preflight middleware and the response hook."""
    if CORS_SETTINGS in app:  # installed already
        return
    policy = OriginPolicy(settings)
    app[CORS_SETTINGS] = settings
    if not policy.enabled:
        return
    app.middlewares.append(cors_middleware(policy))
    app.on_response_prepare.append(response_hook(policy))
