"""The cache Scope: everything about a request, except its last user message, that must match exactly.

Two requests may share a cached answer only if they have the same Scope. The Scope is an exact-match key,
never text mixed into the embedding: the tenant, the cache namespace, the model, and a digest of every other
request field. The digest deliberately covers *every* field except the last message and a short list of
answer-neutral fields (:data:`NEUTRAL_FIELDS`), so a parameter we have never heard of can never be served
across. The conversation before the last message (system prompts included) is part of the digest.

The semantic tier applies only when the last message is a user message whose content is plain text (a
string, or a list of text parts, joined by ``"\\n"``); otherwise :func:`build_scope` returns ``None`` as the
query and the request is exact-tier only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

#: Request fields that cannot change the answer, ignored by the Scope digest. ``messages`` and ``model`` are
#: handled separately (the prefix of the conversation goes into the digest, the model into ``Scope.model``).
NEUTRAL_FIELDS: frozenset[str] = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "timeout",
        "request_timeout",
        "extra_headers",
        "safety_identifier",
        "prompt_cache_key",
        "cache",  # LiteLLM's per-request cache controls ({"no-cache": true, "ttl": 600, ...}): never the answer's
    }
)


@dataclass(frozen=True)
class Scope:
    """Exact-match part of a cache key. Entries are only ever compared within one Scope."""

    tenant: str
    namespace: str
    model: str
    digest: str  # sha256 hex of the canonical rest of the request

    @property
    def key(self) -> str:
        """A stable string id for this scope (hex, safe in Redis key names)."""
        return sha256_hex(canonical_json([self.tenant, self.namespace, self.model, self.digest]))


def _normalize(value: Any) -> Any:
    """Make equal requests hash equally: integral floats become ints (``1.0`` == ``1``), tuples lists."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    """An explicit ``null`` means the same as an absent field (top level only)."""
    return {k: v for k, v in mapping.items() if v is not None}


def canonical_json(value: Any) -> str:
    """Canonical JSON used for hashing: sorted keys, compact separators, integral floats as ints."""
    normal = _normalize(value)
    try:
        return orjson.dumps(normal, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (e.g. a seed of 1e20): json takes any size
        return json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _messages(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return list(messages) if isinstance(messages, list) else []


def _canonical_message(message: Any) -> Any:
    return _drop_none(message) if isinstance(message, dict) else message


def query_text(message: Any) -> str | None:
    """The text of a user message, or None if it is not a plain-text user message."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None  # images, audio, files...: exact tier only
        texts.append(part["text"])
    return "\n".join(texts)


def build_scope(body: dict[str, Any], *, tenant: str, namespace: str) -> tuple[Scope, str | None]:
    """Split a chat-completions request into its Scope and the query text for the semantic tier.

    The query is the text of the last message when it is a plain-text user message, else ``None``.
    """
    messages = _messages(body)
    params = {k: v for k, v in _drop_none(body).items() if k not in NEUTRAL_FIELDS}
    rest = {"params": params, "prefix": [_canonical_message(m) for m in messages[:-1]]}
    model = body.get("model")
    scope = Scope(
        tenant=tenant,
        namespace=namespace,
        model=model if isinstance(model, str) else canonical_json(model),
        digest=sha256_hex(canonical_json(rest)),
    )
    query = query_text(messages[-1]) if messages else None
    return scope, query


def exact_key(scope: Scope, body: dict[str, Any]) -> str:
    """Hash of the scope and the full last message (canonical): the exact-tier key and the entry id."""
    messages = _messages(body)
    last = _canonical_message(messages[-1]) if messages else None
    return sha256_hex(canonical_json({"scope": scope.key, "last": last}))
