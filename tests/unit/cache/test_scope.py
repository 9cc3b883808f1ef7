"""Scope: every answer-relevant request element separates entries; answer-neutral ones do not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cache.scope import NEUTRAL_FIELDS, Scope, build_scope, exact_key, query_text

IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
AUDIO_PART = {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def base_body() -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.2,
    }


def scope_of(body: dict[str, Any], tenant: str = "t1", namespace: str = "default") -> Scope:
    return build_scope(body, tenant=tenant, namespace=namespace)[0]


def with_change(change: str) -> dict[str, Any]:
    body = base_body()
    messages = body["messages"]
    edits: dict[str, Any] = {
        "model": lambda: body.update(model="gpt-4o"),
        "system prompt": lambda: messages[0].update(content="You are verbose."),
        "earlier conversation": lambda: messages[2].update(content="Hello there."),
        "earlier user turn": lambda: messages[1].update(content="Hey"),
        "tools": lambda: body.update(tools=[TOOL]),
        "tool_choice": lambda: body.update(tool_choice="none"),
        "functions": lambda: body.update(functions=[TOOL["function"]]),
        "response_format": lambda: body.update(response_format={"type": "json_object"}),
        "temperature": lambda: body.update(temperature=0.3),
        "top_p": lambda: body.update(top_p=0.5),
        "n": lambda: body.update(n=2),
        "max_tokens": lambda: body.update(max_tokens=10),
        "max_completion_tokens": lambda: body.update(max_completion_tokens=10),
        "stop": lambda: body.update(stop=["\n"]),
        "seed": lambda: body.update(seed=7),
        "presence_penalty": lambda: body.update(presence_penalty=0.5),
        "frequency_penalty": lambda: body.update(frequency_penalty=0.5),
        "logit_bias": lambda: body.update(logit_bias={"1234": -100}),
        "unknown extra param": lambda: body.update(brand_new_knob="on"),
    }
    edits[change]()
    return body


CHANGES = [
    "model", "system prompt", "earlier conversation", "earlier user turn", "tools", "tool_choice",
    "functions", "response_format", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens",
    "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "unknown extra param",
]  # fmt: skip


@pytest.mark.parametrize("change", CHANGES)
def test_each_answer_relevant_element_separates_scopes(change: str) -> None:
    base, changed = scope_of(base_body()), scope_of(with_change(change))
    assert base.key != changed.key
    assert exact_key(base, base_body()) != exact_key(changed, with_change(change))


def test_tenant_separates_scopes() -> None:
    assert scope_of(base_body(), tenant="a").key != scope_of(base_body(), tenant="b").key


def test_namespace_separates_scopes() -> None:
    assert scope_of(base_body(), namespace="a").key != scope_of(base_body(), namespace="b").key


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "user-42"},
        {"metadata": {"trace": "x"}},
        {"store": True},
        {"service_tier": "auto"},
        {"timeout": 30},
        {"temperature": None, "seed": None},  # explicit null == absent (temperature kept: see below)
    ],
)
def test_answer_neutral_fields_do_not_separate(extra: dict[str, Any]) -> None:
    body = base_body()
    changed = copy.deepcopy(body)
    changed.update(extra)
    if extra.get("temperature", 0) is None:
        body.pop("temperature")
    assert scope_of(body) == scope_of(changed)
    assert exact_key(scope_of(body), body) == exact_key(scope_of(changed), changed)


def test_neutral_list_is_short_and_excludes_sampling() -> None:
    for field in ("temperature", "top_p", "n", "max_tokens", "stop", "seed", "tools", "response_format"):
        assert field not in NEUTRAL_FIELDS


def test_integral_float_equals_int_and_key_order_is_irrelevant() -> None:
    a = base_body() | {"temperature": 1, "top_p": 1.0}
    b = dict(reversed(list((base_body() | {"temperature": 1.0, "top_p": 1}).items())))
    assert scope_of(a) == scope_of(b)


def test_last_user_message_is_not_in_scope_but_is_in_exact_key() -> None:
    other = base_body()
    other["messages"][-1]["content"] = "What's France's capital city?"
    assert scope_of(base_body()) == scope_of(other)
    scope = scope_of(base_body())
    assert exact_key(scope, base_body()) != exact_key(scope, other)


def test_scope_fields_and_stable_key() -> None:
    scope, query = build_scope(base_body(), tenant="t1", namespace="ns")
    assert (scope.tenant, scope.namespace, scope.model) == ("t1", "ns", "gpt-4o-mini")
    assert len(scope.digest) == 64 and int(scope.digest, 16) >= 0
    assert scope.key == scope_of(base_body(), namespace="ns").key
    assert query == "What is the capital of France?"


def test_query_from_text_parts_joined_by_newline() -> None:
    body = base_body()
    body["messages"][-1]["content"] = [{"type": "text", "text": "line one"}, {"type": "text", "text": "two"}]
    assert build_scope(body, tenant="t", namespace="n")[1] == "line one\ntwo"


@pytest.mark.parametrize(
    "last",
    [
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE_PART]},
        {"role": "user", "content": [AUDIO_PART]},
        {"role": "assistant", "content": "prefill"},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
)  # fmt: skip
def test_non_text_or_non_user_last_message_is_exact_tier_only(last: dict[str, Any]) -> None:
    body = base_body()
    body["messages"].append(last)
    scope, query = build_scope(body, tenant="t", namespace="n")
    assert query is None
    assert exact_key(scope, body) != exact_key(scope, base_body())


def test_no_messages_gives_no_query() -> None:
    assert build_scope({"model": "m"}, tenant="t", namespace="n")[1] is None
    assert query_text({"role": "user", "content": []}) is None
