"""Which model groups take deja's direct OpenAI path, and which stay on LiteLLM's own call."""

from __future__ import annotations

from providers.direct import direct_capable
from providers.gateway import Gateway


def deployment(**params: object) -> dict[str, object]:
    return {"model_name": "g", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1",
                                                  **params}}


def test_openai_compatible_deployments_are_direct() -> None:
    assert direct_capable(deployment())
    assert direct_capable(deployment(api_key="k", timeout=5, order=2, weight=3, extra_headers={"X": "1"}))
    assert direct_capable({"litellm_params": {"model": "gpt-4o-mini"}})  # LiteLLM infers the openai provider


def test_other_providers_and_litellm_only_features_are_not_direct() -> None:
    assert not direct_capable({"litellm_params": {"model": "anthropic/claude-3-5-sonnet-20240620"}})
    assert not direct_capable({"litellm_params": {"model": "claude-3-5-sonnet-20240620"}})
    assert not direct_capable({"litellm_params": {"model": "azure/gpt-4o", "api_base": "https://x"}})
    assert not direct_capable(deployment(max_parallel_requests=2))
    assert not direct_capable(deployment(input_cost_per_token=0.1))


def test_a_group_is_direct_only_when_every_deployment_is() -> None:
    gateway = Gateway([{**deployment(), "model_name": "mixed"},
                       {"model_name": "mixed", "litellm_params": {"model": "anthropic/claude-3-5-haiku-20241022"}},
                       {**deployment(), "model_name": "plain"}])
    assert gateway.router.is_direct("plain")
    assert not gateway.router.is_direct("mixed")
    assert not Gateway([]).router.is_direct("sim")


def test_strategies_that_learn_from_litellm_callbacks_keep_litellm() -> None:
    assert not Gateway([deployment()], router_settings={"routing_strategy": "latency-based-routing"}).router \
        .is_direct("g")
    assert not Gateway([deployment()], direct_openai=False).router.is_direct("g")


def test_upstream_errors_become_litellm_errors_with_their_retry_after() -> None:
    """The Router's retry and cooldown rules read LiteLLM's exception types and a lower-case ``retry-after``."""
    import litellm

    from providers.direct import _error

    limited = _error(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "7"}, "gpt-4o-mini")
    assert isinstance(limited, litellm.RateLimitError) and "slow down" in str(limited)
    assert litellm.utils._get_retry_after_from_exception_header(limited.litellm_response_headers) == 7
    context = _error(400, b'{"error": {"message": "too long", "code": "context_length_exceeded"}}', {}, "m")
    assert isinstance(context, litellm.ContextWindowExceededError)
    assert isinstance(_error(503, b"", {}, "m"), litellm.ServiceUnavailableError)
    assert isinstance(_error(401, b"{}", {}, "m"), litellm.AuthenticationError)
