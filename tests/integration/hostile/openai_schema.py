"""Hypothesis strategies for request bodies, drawn from OpenAI's published OpenAPI document, and hostile
mutations of them.

``from_schema`` reads the subset of OpenAPI 3.1 that ``CreateChatCompletionRequest`` and
``CreateEmbeddingRequest`` use (``$ref``, ``allOf``, ``anyOf``/``oneOf``, ``type`` — a list of types too —,
``enum``, ``nullable``, ``properties``/``required``, ``additionalProperties``, ``items``, ``minItems``/``maxItems``,
``minimum``/``maximum``); optional properties are drawn or left out, collections kept small, recursion cut at a
depth. ``mutate`` then damages a valid body the way a careless or hostile client would.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

SPEC_NAME = "openai-openapi.json.gz"
MAX_DEPTH = 7
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def spec_path() -> Path:
    """``shared/data/openai-openapi.json.gz`` next to the checkout (main) or one level above (a worktree)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / SPEC_NAME
        if candidate.exists():
            return candidate
    raise FileNotFoundError(SPEC_NAME)


@cache
def schemas() -> dict[str, Any]:
    with gzip.open(spec_path(), "rt", encoding="utf-8") as f:
        return dict(json.load(f)["components"]["schemas"])


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in parts:
        part = _resolve(part)
        if "allOf" in part:
            part = _merge(part["allOf"])
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += part.get("required", [])
    return merged


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    schema = _resolve(schema)
    if depth > MAX_DEPTH:
        return st.none()
    if "allOf" in schema:
        return from_schema(_merge(schema["allOf"]), depth)
    choices = schema.get("anyOf") or schema.get("oneOf")
    if choices:
        return st.one_of([from_schema(c, depth + 1) for c in choices])
    strategy = _typed(schema, depth)
    return st.one_of(strategy, st.none()) if schema.get("nullable") else strategy


def _typed(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_typed({**schema, "type": k}, depth) for k in kind])
    if kind == "string":
        return TEXT
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -1000)), int(schema.get("maximum", 1000)))
    if kind == "number":
        return st.floats(float(schema.get("minimum", -1000)), float(schema.get("maximum", 1000)))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = int(schema.get("minItems", 0))
        return st.lists(from_schema(schema.get("items", {}), depth + 1), min_size=low,
                        max_size=max(low, min(3, int(schema.get("maxItems", 3)))))
    if kind == "object" or "properties" in schema:
        return _object(schema, depth)
    return st.one_of(st.none(), st.booleans(), st.integers(-5, 5), TEXT)


def _object(schema: dict[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = {k: from_schema(v, depth + 1) for k, v in properties.items() if k in required}
    optional = {k: from_schema(v, depth + 1) for k, v in properties.items() if k not in required}
    if not properties and isinstance(schema.get("additionalProperties"), dict):
        return st.dictionaries(TEXT, from_schema(schema["additionalProperties"], depth + 1), max_size=2)
    return st.fixed_dictionaries(fixed, optional=optional)


def request(name: str, model: str) -> st.SearchStrategy[dict[str, Any]]:
    """A body of schema ``name``, its ``model`` mostly ours (else a drawn one, which should be a 404)."""
    models = st.sampled_from([model] * 4 + ["gpt-unknown", ""])
    return st.tuples(from_schema(schemas()[name]), models).map(lambda pair: {**pair[0], "model": pair[1]})


# -- hostile mutations ------------------------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [
    "x\x00y", "\ud800", "a\udfffb", "\ufeff", "", " " * 3, "🙂" * 5, 2**64, -(2**63) - 1, 10**30, 1e308, -1,
    0, 1.5, True, None, [], {}, [[[[[[]]]]]], {"a": {"b": {"c": {}}}}, "false", "5", 5, [5], {"role": "user"},
    "' OR 1=1 --", "../../etc/passwd", "%00", "\r\nX-Injected: 1",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _delete(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [v for i, v in enumerate(value) if i != path[0]]
    head = path[0]
    if isinstance(value, dict):
        return {**value, head: _delete(value[head], path[1:])}
    copy = list(value)
    copy[head] = _delete(copy[head], path[1:])
    return copy


_DEEP = "__deja_deep_{}__"


def _nest(depth: int) -> str:
    """A placeholder ``encode`` turns into ``depth`` nested arrays (json.dumps itself would recurse too deep)."""
    return _DEEP.format(depth)


@st.composite
def mutate(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with one to three hostile changes: a leaf replaced, a field deleted, a field added, or a
    subtree nested past any sane depth."""
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        if action == "replace" or (action == "delete" and not path):
            body = _replace(body, path, draw(st.sampled_from(HOSTILE_VALUES)))
        elif action == "delete":
            body = _delete(body, path)
        elif action == "add":
            body = {**body, draw(st.sampled_from(["x", "\x00", "\ud800", "stream", "n", "tools"])):
                    draw(st.sampled_from(HOSTILE_VALUES))} if isinstance(body, dict) else body
        else:
            body = _replace(body, path, _nest(draw(st.sampled_from([70, 300, 1100]))))
        if not isinstance(body, dict):
            return {"value": body}
    return body


def encode(body: Any) -> bytes:
    """JSON as a careless client writes it: lone surrogates escaped as ``\\udXXX``, NaN and Infinity bare,
    arrays nested as deep as ``mutate`` asked."""
    text = json.dumps(body, ensure_ascii=True, allow_nan=True)
    for depth in (70, 300, 1100):
        text = text.replace(json.dumps(_DEEP.format(depth)), "[" * depth + "1" + "]" * depth)
    return text.encode()
