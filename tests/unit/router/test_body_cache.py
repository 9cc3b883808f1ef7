"""LiteLLM's body ``cache`` object means what deja's cache headers mean; the Responses and Completions requests
keyed as the cache keys chat requests, each API apart."""

from __future__ import annotations

from typing import Any

import pytest

from cache import build_scope
from cache.scope import exact_key
from router.http import errors as err
from router.pipeline.api_scope import completions_cache_body, responses_cache_body
from router.pipeline.body_cache import with_body_cache
from router.pipeline.cache_controls import CacheControls, parse_cache_controls


def test_body_controls_mean_the_headers() -> None:
    body = {"cache": {"no-cache": True, "no-store": True, "ttl": 600, "namespace": "x"}}
    controls = with_body_cache(CacheControls(), body)
    assert controls == CacheControls(no_cache=True, no_store=True, ttl=600.0, namespace="x")
    headers = parse_cache_controls({"X-Deja-Cache-TTL": "30", "X-Deja-Cache-Namespace": "h"})
    controls = with_body_cache(headers, {"cache": {"ttl": 600, "namespace": "x", "s-maxage": 5}})
    assert (controls.ttl, controls.namespace, controls.max_age) == (30.0, "h", 5.0)  # a header wins
    assert with_body_cache(CacheControls(), {"cache": {"use-cache": False}}).no_store
    assert with_body_cache(CacheControls(), {}) == CacheControls()


@pytest.mark.parametrize(("cache", "param"), [
    ("yes", "cache"), ({"no-cache": "true"}, "cache.no-cache"), ({"ttl": -1}, "cache.ttl"),
    ({"ttl": float("nan")}, "cache.ttl"), ({"namespace": "a b"}, "cache.namespace"),
    ({"nocache": True}, "cache.nocache"),
])
def test_bad_body_controls_are_a_400_naming_them(cache: Any, param: str) -> None:
    with pytest.raises(err.BadRequestError) as caught:
        with_body_cache(CacheControls(), {"cache": cache})
    assert caught.value.param == param


def test_cache_object_is_not_part_of_the_scope() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    plain, _ = build_scope(chat, tenant="t", namespace="")
    controlled, _ = build_scope({**chat, "cache": {"no-store": True, "ttl": 5}}, tenant="t", namespace="")
    assert plain == controlled


def test_responses_and_completions_are_keyed_apart_and_plain_text_is_a_query() -> None:
    responses = responses_cache_body({"model": "m", "input": "What is deja vu?", "instructions": "brief"})
    completions = completions_cache_body({"model": "m", "prompt": "What is deja vu?"})
    chat = {"model": "m", "messages": [{"role": "user", "content": "What is deja vu?"}]}
    scopes = [build_scope(b, tenant="t", namespace="") for b in (responses, completions, chat)]
    assert [q for _, q in scopes] == ["What is deja vu?"] * 3
    assert len({s.key for s, _ in scopes}) == 3
    listed = responses_cache_body({"model": "m", "input": [{"role": "user", "content": "What is deja vu?"}],
                                   "instructions": "brief"})
    assert build_scope(listed, tenant="t", namespace="")[0] == scopes[0][0]  # the same request, two spellings


def test_non_text_input_is_exact_only_and_distinct() -> None:
    one = responses_cache_body({"model": "m", "input": [{"type": "function_call_output", "call_id": "a",
                                                         "output": "1"}]})
    two = responses_cache_body({"model": "m", "input": [{"type": "function_call_output", "call_id": "a",
                                                         "output": "2"}]})
    (s1, q1), (s2, q2) = build_scope(one, tenant="t", namespace=""), build_scope(two, tenant="t", namespace="")
    assert q1 is None and q2 is None
    assert exact_key(s1, one) != exact_key(s2, two)
    tokens = completions_cache_body({"model": "m", "prompt": [1, 2, 3]})
    assert build_scope(tokens, tenant="t", namespace="")[1] is None


def test_responses_token_estimate_never_tokenises_image_bytes() -> None:
    from router.pipeline.responses import _estimate

    pixels = "data:image/png;base64," + "A" * 100_000
    image = {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                         {"type": "input_image", "image_url": pixels}]}
    call_output = {"type": "function_call_output", "call_id": "c", "output": "forty two"}
    assert 85 < _estimate([image, call_output], "gpt-4o-mini") < 100
