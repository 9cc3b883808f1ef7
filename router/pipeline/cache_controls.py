"""The cache's request controls and response headers.

Request: ``Cache-Control: no-cache`` (skip the lookup, still store), ``Cache-Control: no-store`` (neither),
``X-Deja-Cache-Threshold`` (minimum cosine similarity for a semantic hit, -1..1), ``X-Deja-Cache-TTL`` (seconds
to keep this answer), ``X-Deja-Cache-Namespace`` (entries are only shared within a namespace).
Response: ``X-Deja-Cache: hit-exact | hit-semantic | miss | bypass``, ``X-Deja-Cache-Similarity`` on semantic hits,
``Age`` on hits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cache import LookupResult
from router.http import errors as err

_NAMESPACE = re.compile(r"^[A-Za-z0-9._:/-]{0,128}$")


@dataclass(frozen=True)
class CacheControls:
    no_cache: bool = False
    no_store: bool = False
    threshold: float | None = None
    ttl: float | None = None
    namespace: str = ""
    max_age: float | None = None  # accept only hits stored at most this many seconds ago (LiteLLM's s-maxage)


def _number(headers: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = headers.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise err.BadRequestError(f"{name} must be a number, got {raw!r}.", param=name,
                                  code="invalid_header") from exc
    if not low <= value <= high:
        raise err.BadRequestError(f"{name} must be between {low:g} and {high:g}, got {raw}.", param=name,
                                  code="invalid_header")
    return value


def parse_cache_controls(headers: Mapping[str, str]) -> CacheControls:
    directives = {d.strip().lower() for d in headers.get("Cache-Control", "").split(",") if d.strip()}
    namespace = headers.get("X-Deja-Cache-Namespace", "")
    if not _NAMESPACE.match(namespace):
        raise err.BadRequestError("X-Deja-Cache-Namespace may hold up to 128 letters, digits and ._:/-",
                                  param="X-Deja-Cache-Namespace", code="invalid_header")
    return CacheControls(
        no_cache="no-cache" in directives, no_store="no-store" in directives,
        threshold=_number(headers, "X-Deja-Cache-Threshold", -1.0, 1.0),
        ttl=_number(headers, "X-Deja-Cache-TTL", 1.0, 365 * 86400.0), namespace=namespace)


def cache_headers(result: LookupResult, now: float) -> dict[str, str]:
    assert result.entry is not None
    headers = {"X-Deja-Cache": f"hit-{result.kind}", "Age": str(max(0, int(now - result.entry.created_at)))}
    if result.kind == "semantic" and result.similarity is not None:
        headers["X-Deja-Cache-Similarity"] = f"{result.similarity:.4f}"
    return headers
