"""Reading and checking request bodies: JSON (orjson, with json's wording for the errors) and the pydantic
models of what deja checks of each OpenAI request; every other field passes through unchanged.

Every malformed body is a 400 in OpenAI's shape, never a crash further on: JSON nested deeper than
``MAX_JSON_DEPTH`` (a RecursionError in json, orjson or pydantic otherwise), text that is not Unicode (a lone
surrogate such as ``"\\ud800"``, which json accepts and no encoder can write), a body whose
``Content-Encoding`` lies, and the fields deja itself relies on with the wrong type (``"stream": "false"``,
``"tool_calls": 5``, a user message without ``content``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from router.http import errors as err


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise err.PayloadTooLargeError(f"Request body of {request.content_length} bytes is over the "
                                       f"limit of {max_bytes} bytes.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise err.PayloadTooLargeError(f"Request body is over the limit of {max_bytes} bytes.") from exc
    except (web.RequestPayloadError, HttpProcessingError) as exc:  # "Content-Encoding: gzip" on a plain body
        raise err.BadRequestError(f"Request body cannot be decoded: {_encoding_of(request)} "
                                  "does not match the bytes sent.", code="invalid_body") from exc
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from ``raw``, checked for depth and (when json had to read it) for lone surrogates."""
    try:
        body = orjson.loads(raw)
        strict = False
    except orjson.JSONDecodeError:
        body = _strict_loads(raw)
        strict = True  # json accepted what orjson did not: perhaps a lone surrogate, or a huge integer
    if not isinstance(body, dict):
        raise err.BadRequestError("Request body must be a JSON object.", code="invalid_json")
    check_tree(body, strings=strict)
    return body


def _encoding_of(request: web.Request) -> str:
    encoding = request.headers.get("Content-Encoding", "")
    return f"Content-Encoding {encoding[:40]!r}" if encoding else "the body's encoding"


MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_tree(value: Any, *, strings: bool) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` and, with ``strings``, text holding a lone surrogate.
    Iterative (no recursion to exhaust) and linear in the size of the tree."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise err.BadRequestError(f"Request body is nested deeper than {MAX_JSON_DEPTH} levels.",
                                      code="invalid_json")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif strings and (_has_surrogate(child) or _has_surrogate(key)):
                raise err.BadRequestError("Request body is not valid JSON: a string holds a lone UTF-16 "
                                          "surrogate (\\ud800-\\udfff), which is not Unicode text.",
                                          code="invalid_json")


def _has_surrogate(value: Any) -> bool:
    return isinstance(value, str) and _SURROGATE.search(value) is not None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _strict_loads(raw: bytes) -> Any:
    """What orjson refused, read by json to word the error (NaN and Infinity are refused, as JSON does)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise err.BadRequestError(f"Request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise err.BadRequestError(f"Request body is nested deeper than {MAX_JSON_DEPTH} levels.",
                                  code="invalid_json") from exc


_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool", "function"})


class ContentPart(BaseModel):
    """One part of a list ``content``: a ``type``, and the text of a text part."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        return self


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_when_required(self) -> Message:
        """OpenAI requires ``content`` on every role but the assistant's (which may carry tool calls); a
        (deprecated) function message's may be null, but is there."""
        missing = "content" not in self.model_fields_set if self.role == "function" else self.content is None
        if missing and self.role in _CONTENT_REQUIRED:
            raise ValueError(f"a {self.role} message needs 'content'")
        return self


class ChatRequest(BaseModel):
    """What deja checks of a chat request; every other field passes through unchanged."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool | None = None  # a string ("false") is refused: deja and the upstream read it as truthy
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    user: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]


def without_nulls(body: dict[str, Any]) -> dict[str, Any]:
    """The body without its top-level ``null`` fields: OpenAI reads a null parameter as an absent one, but
    LiteLLM fails on some (``"metadata": null`` → 502 from inside the Router)."""
    if all(value is not None for value in body.values()):
        return body
    return {key: value for key, value in body.items() if value is not None}


class ResponsesRequest(BaseModel):
    """What deja checks of a Responses API request (``POST /v1/responses``)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    stream: StrictBool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    previous_response_id: str | None = None
    user: str | None = None


class CompletionRequest(BaseModel):
    """What deja checks of a legacy completions request (``POST /v1/completions``)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    # OpenAI's four shapes, none of them empty (LiteLLM answers an empty list as an upstream failure)
    prompt: (str | Annotated[list[str], Field(min_length=1)] | Annotated[list[int], Field(min_length=1)]
             | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)])
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=128)
    best_of: int | None = Field(None, ge=1, le=20)
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None


def validate(model: type[BaseModel], body: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise err.BadRequestError(f"Invalid request: {param}: {first['msg']}", param=param,
                                  code="invalid_request") from exc
