"""Spend attribution of one request: its tags and metadata, as LiteLLM's proxy takes them.

Tags come from the body's ``metadata.tags`` (a list of strings), the ``x-litellm-tags`` header and the
``x-deja-tags`` header (comma-separated), merged in that order without duplicates. At most ``MAX_TAGS`` tags of
at most ``MAX_TAG_CHARS`` printable characters each; anything else is a 400 naming the field. ``metadata``
must be an object (or absent); it is stored with the usage row (capped by the usage writer).

``without_tags`` drops ``metadata.tags`` from what is sent to the model: OpenAI's ``metadata`` takes string
values only, and the tags are deja's (LiteLLM's proxy does not forward them either).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from router.http.errors import BadRequestError
from router.storage.models import MAX_TAG_CHARS, MAX_TAGS

TAG_HEADERS = ("x-litellm-tags", "x-deja-tags")


@dataclass(frozen=True)
class Attribution:
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None

    def tags_json(self) -> str | None:
        return orjson.dumps(list(self.tags)).decode() if self.tags else None

    def metadata_json(self) -> str | None:
        return orjson.dumps(self.metadata, default=str).decode() if self.metadata else None


def _check(tag: Any, where: str) -> str:
    if not isinstance(tag, str):
        raise BadRequestError(f"Tags must be strings; {where} has {type(tag).__name__}.", param=where,
                              code="invalid_tags")
    tag = tag.strip()
    if len(tag) > MAX_TAG_CHARS or not tag.isprintable():
        raise BadRequestError(f"Each tag must be at most {MAX_TAG_CHARS} printable characters ({where}).",
                              param=where, code="invalid_tags")
    return tag


def attribution(headers: Mapping[str, str], body: Mapping[str, Any]) -> Attribution:
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequestError("metadata must be an object.", param="metadata", code="invalid_metadata")
    found: list[str] = []
    body_tags = (metadata or {}).get("tags")
    if body_tags is not None:
        if not isinstance(body_tags, list):
            raise BadRequestError("metadata.tags must be a list of strings.", param="metadata.tags",
                                  code="invalid_tags")
        found += [_check(t, "metadata.tags") for t in body_tags]
    for name in TAG_HEADERS:
        for value in headers.getall(name, []) if hasattr(headers, "getall") else [headers.get(name) or ""]:
            found += [_check(t, name) for t in value.split(",") if t.strip()]
    tags = tuple(dict.fromkeys(t for t in found if t))
    if len(tags) > MAX_TAGS:
        raise BadRequestError(f"A request may carry at most {MAX_TAGS} tags, not {len(tags)}.", param="tags",
                              code="invalid_tags")
    return Attribution(tags=tags, metadata=metadata or None)


def without_tags(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``metadata.tags`` (and without ``metadata`` once empty); the same object if no tags."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "tags" not in metadata:
        return body
    rest = {k: v for k, v in metadata.items() if k != "tags"}
    out = {k: v for k, v in body.items() if k != "metadata"}
    if rest:
        out["metadata"] = rest
    return out
