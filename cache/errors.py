"""Errors raised by the cache package.

Foreign exceptions (Redis, sockets, numpy) are translated at the package boundary, so callers only ever
need to catch :class:`CacheError`.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class for every error the cache raises."""


class CacheUnavailableError(CacheError):
    """The cache backend cannot be reached (or answered too slowly); the caller should bypass the cache."""


class CacheConfigError(CacheError, ValueError):
    """Invalid cache configuration or arguments (bad TTL, capacity, dimensions...)."""


class EmbeddingUnavailableError(CacheUnavailableError):
    """The embedder failed; the semantic tier cannot run for this request (the caller bypasses)."""
