"""LiteLLM's per-request cache controls in the body, with the meaning of deja's cache headers.

``{"cache": {"no-cache": true}}`` is ``Cache-Control: no-cache`` (skip the lookup, still store),
``"no-store": true`` is ``Cache-Control: no-store`` (neither look up nor store), ``"ttl": 600`` is
``X-Deja-Cache-TTL: 600``, ``"namespace": "x"`` is ``X-Deja-Cache-Namespace: x``, ``"s-maxage": 60`` accepts only
hits stored at most 60 seconds ago, ``"use-cache": false`` is ``no-store``. A header wins over the body where both
set a value. The ``cache`` field is never sent upstream (it is one of LiteLLM's own parameters) and never part of the
cache scope (``cache.scope.NEUTRAL_FIELDS``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from router.http import errors as err
from router.pipeline.cache_controls import _NAMESPACE, CacheControls

_FLAGS = ("no-cache", "no-store", "use-cache")
_KNOWN = frozenset({*_FLAGS, "ttl", "namespace", "s-maxage"})


def _bad(message: str, key: str) -> err.BadRequestError:
    return err.BadRequestError(message, param=f"cache.{key}", code="invalid_cache_control")


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"cache.{key} must be a number of seconds.", key)
    if not 0 <= value <= 365 * 86400:
        raise _bad(f"cache.{key} must be between 0 and 31536000 seconds.", key)
    return float(value)


def body_cache(body: dict[str, Any]) -> dict[str, Any]:
    """The body's ``cache`` object, checked (an OpenAI-shaped 400 names a bad key); ``{}`` when absent."""
    value = body.get("cache")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise err.BadRequestError("cache must be an object such as {\"no-cache\": true}.", param="cache",
                                  code="invalid_cache_control")
    for key, item in value.items():
        if key not in _KNOWN:
            raise _bad(f"cache.{key} is not a cache control deja knows ({', '.join(sorted(_KNOWN))}).", key)
        if key in _FLAGS and not isinstance(item, bool):
            raise _bad(f"cache.{key} must be true or false.", key)
        if key in ("ttl", "s-maxage"):
            _seconds(item, key)
        if key == "namespace" and (not isinstance(item, str) or not _NAMESPACE.match(item)):
            raise _bad("cache.namespace may hold up to 128 letters, digits and ._:/-", key)
    return value


def with_body_cache(controls: CacheControls, body: dict[str, Any]) -> CacheControls:
    """The header controls with the body's ``cache`` object folded in."""
    cache = body_cache(body)
    if not cache:
        return controls
    ttl = controls.ttl
    if ttl is None and cache.get("ttl") is not None:
        ttl = max(1.0, float(cache["ttl"]))
    max_age = cache.get("s-maxage")
    return dataclasses.replace(
        controls,
        no_cache=controls.no_cache or bool(cache.get("no-cache")),
        no_store=controls.no_store or bool(cache.get("no-store")) or cache.get("use-cache") is False,
        ttl=ttl, namespace=controls.namespace or str(cache.get("namespace") or ""),
        max_age=float(max_age) if max_age is not None else controls.max_age)
